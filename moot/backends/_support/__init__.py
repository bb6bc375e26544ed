"""What the network backends share, written once: TLS options and contexts
(:mod:`.tls`), readiness of sockets and the I/O thread's event loop
(:mod:`.loop`). Nothing here knows an engine's protocol."""
