"""Tamin's provider-side families: dispensing (``tamin_pharmacy``) and paraclinic (``tamin_paraclinic``).

* ``client``     the families' routes on the one HTTP exchange (operator token by ``acl/authenticate``).
* ``answers``    reading fetch / submit / confirm answers.
* ``steps``      what both share: the prescription served, one attempt's steps and trail.
* ``pharmacy``   fetch -> PostPresc -> confirm.
* ``paraclinic`` fetch -> register -> confirm.
* ``plugin``     what the registry knows of each.
"""
