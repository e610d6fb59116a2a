"""DITAS/SEPAS destination: the Ministry of Health's EHR (SEPAS) through the DITAS gateway.

* ``crypto``      the secure envelope: AES-256-CBC with a fresh key and IV, both RSA-OAEP
                  encrypted with the Ministry's public key (docs/sepas-wire.md).
* ``messages``    the thrita VM message (``Person``, ``MsgID``, ``Composition``) as XML.
* ``terminology`` local code-table checks with the enforcement dates of seed 004.
* ``client``      the DITAS REST client: password grant, bearer + ``pid``, validate then save.
* ``destination`` the dispatcher's ``Destination``: local checks, UIDs of earlier messages.
"""
