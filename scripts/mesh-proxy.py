#!/usr/bin/python3
# A service-mesh proxy stand-in for the tests (testkit::mesh) and `make demo`: plain-text forwarding as
# ztunnel or a sidecar does it inside a pod's network namespace (see testkit/src/mesh.rs for the rules
# the pod's namespace needs). Usage: mesh-proxy.py OUTBOUND_PORT INBOUND_PORT MODE HBONE_PORT, MODE
# the inbound leg's: tproxy (ztunnel: from the client's address), redirect (Linkerd: from the pod's
# address), istio-redirect (Istio's sidecar: from 127.0.0.6, its inbound passthrough address)
import socket, struct, sys, threading
MARK, SO_MARK, IP_TRANSPARENT, SO_ORIGINAL_DST = 0x539, 36, 19, 80
OUT, IN, IN_MODE, HBONE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            s.shutdown(how)
        except OSError:
            pass

def listener(port, transparent):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if transparent:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    return s

def upstream(dest, source_ip):
    u = socket.socket()
    try:
        u.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
    except OSError:
        pass
    if source_ip:
        # A loopback address is the pod's own; another one (the client's) needs a transparent socket.
        if not source_ip.startswith("127."):
            u.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        u.bind((source_ip, 0))
    u.connect(dest)
    return u

def relay(conn, dest, source_ip):
    try:
        up = upstream(dest, source_ip)
    except OSError:
        conn.close()
        return
    threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
    threading.Thread(target=pipe, args=(up, conn), daemon=True).start()

def original(conn):
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack("!H", raw[2:4])
    return (socket.inet_ntoa(raw[4:8]), port)

def outbound(l):
    while True:
        conn, _ = l.accept()
        try:
            dest = original(conn)
        except OSError:
            conn.close()
            continue
        relay(conn, dest, None)

def inbound(l):
    while True:
        conn, peer = l.accept()
        if IN_MODE == "tproxy":
            relay(conn, conn.getsockname(), peer[0])
        else:
            try:
                relay(conn, original(conn), "127.0.0.6" if IN_MODE == "istio-redirect" else None)
            except OSError:
                conn.close()

def hbone(l):
    while True:
        conn, _ = l.accept()
        try:
            conn.settimeout(2)
            conn.recv(65536)
        except OSError:
            pass
        conn.close()

roles = [(outbound, OUT, False), (inbound, IN, IN_MODE == "tproxy")]
if HBONE:
    roles.append((hbone, HBONE, True))
threads = [threading.Thread(target=f, args=(listener(p, t),), daemon=True) for f, p, t in roles]
for t in threads:
    t.start()
for t in threads:
    t.join()
