"""One attempt of one run on whatever node it landed: start its container, follow
its live metrics and logs, carry its checkpoint, commit its record.

May import the store, images and the daemon client; never a backend, a driver
or the CLI.
"""
