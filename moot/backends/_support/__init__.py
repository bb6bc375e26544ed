"""What the network backends share, written once: TLS options and contexts
(:mod:`.tls`), readiness of sockets and the I/O thread's event loop
(:mod:`.loop`), forgetting backends in a forked child (:mod:`.fork`),
re-checks at owner expiry (:mod:`.rechecks`), and the wording of a lost
engine (:mod:`.lost`). Nothing here knows an
engine's protocol."""
