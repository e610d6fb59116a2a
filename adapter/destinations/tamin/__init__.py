"""Tamin (Social Security Organization) e-prescribing: eligibility, SendEpresc, edit, delete.

* ``client``      routes and answer reading on the one HTTP exchange; the ambiguous-send lookup.
* ``answers``     reading Tamin's answers (data/list shapes, the 304 duplicate, refusals).
* ``destination`` the dispatcher's destination: head ids of creates, the visit's HID.
* ``plugin``      what the registry knows of it.
"""
