"""Opens COUNT TCP connections from SOURCE that send only an SSH banner, holds them,
and prints how many the server had closed after WAIT seconds (it should close every
one: refused at once, or at its login deadline). Usage: banners.py PORT SOURCE COUNT WAIT"""
import select
import socket
import sys
import time

port, source, count, wait = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sockets = []
for _ in range(count):
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"SSH-2.0-banner_only\r\n")
    sockets.append(s)
print("open", flush=True)
# The test logs in meanwhile; then it waits for this line.
sys.stdin.readline()
closed = set()
deadline = time.time() + wait
while len(closed) < count and time.time() < deadline:
    readable, _, _ = select.select([s for s in sockets if s not in closed], [], [], 0.2)
    for s in readable:
        try:
            if not s.recv(65536):
                closed.add(s)
        except OSError:
            closed.add(s)
print(f"closed={len(closed)}", flush=True)
