"""What the tests share: tiny models built offline, real servers on 127.0.0.1, probes, pictures, reference checks.

Test modules import from here (``from helpers.server_harness import inprocess_server``), never from one
another; fixtures that several modules use live in the ``conftest.py`` beside them. tests/README.md maps
each test module to what it covers.
"""
