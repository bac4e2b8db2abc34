"""Supervised child processes: the embedded servers (Tansu, Postgres, Redis from their wheels)
and the service processes, shared by ``interaction-summary up``, the tests and the benchmarks.

- ``embedded.processes``: ``Process`` (one child logging to a file, dying with its parent),
  ports, the environment a service child runs with.
- ``embedded.servers``: start each server, or all three (``embedded_servers``).
- ``embedded.isolation``: a database, key prefix, topics and group of one's own on shared servers.
"""
