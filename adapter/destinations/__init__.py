"""Destination clients (Tamin now, DITAS/SEPAS later) and what they share: auth, outcomes."""
