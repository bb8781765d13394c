"""Process and system plumbing: libc, namespaces, the mount table, checks before mounting,
bind mounts, the daemon process and its handshake."""
