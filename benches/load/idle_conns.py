#!/usr/bin/env python3
"""RSS per idle keep-alive connection of a running proxy.

Opens N client connections to 127.0.0.1:PORT, spread over 127.0.0.x source addresses,
sends one GET on each and reads its response, keeps them all open and idle for ten
seconds, and prints how much the proxy's resident memory (VmRSS of PID and its children)
grew per connection: what an idle keep-alive client costs it.

    idle_conns.py PORT PID [N] [tls]

With `tls`, each connection is HTTPS (TLS 1.3, certificate not verified: the proxy's
own test certificate), so the figure includes the TLS state an idle connection keeps.
"""
import os
import random
import socket
import ssl
import sys
import time


def rss_kib(pid):
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 9000
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    tls = None
    if len(sys.argv) > 4 and sys.argv[4] == "tls":
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        # The name tls.sh's certificate serves (another Host is answered 421).
        request = b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n"
    before = rss_kib(pid)
    conns = []
    # A source network of its own each run: the ports of an earlier run's connections
    # may still be in TIME_WAIT.
    net = random.randint(1, 254)
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A new source address every 20 000 connections keeps clear of port exhaustion.
        s.bind((f"127.{net}.{i // 20000}.2", 0))
        s.connect(("127.0.0.1", port))
        if tls:
            s = tls.wrap_socket(s, server_hostname="bench.local")
        s.sendall(request)
        conns.append(s)
        # Read responses in batches so the proxy never holds many requests at once.
        if len(conns) % 200 == 0 or i == n - 1:
            for c in conns[-200:]:
                c.settimeout(10)
                data = b""
                while b"hello world" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        sys.exit(f"connection closed by the proxy after {len(conns)}")
                    data += chunk
    time.sleep(10)
    after = rss_kib(pid)
    print(f"{n} idle connections: RSS {before} KiB -> {after} KiB, "
          f"{(after - before) * 1024 / n:.0f} bytes per connection")
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
