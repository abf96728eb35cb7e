"""Test scaffolding shared by the tests and the benchmarks, kept out of the wheel (it lives under tests/).

    apple_health_export  a seeded, realistic Apple Health export.xml and what a correct import finds
    scratch_db           a throwaway PostgreSQL database on a server, dropped afterwards
    faults               a hold before COMMIT for the fault tests, and the app factory gunicorn runs them on

Import as ``tests.support.<module>`` with the repository root on ``sys.path``: pytest's ``pythonpath``
puts it there for the tests, and each bench script for itself (``ROOT`` in bench/common.py).
"""
