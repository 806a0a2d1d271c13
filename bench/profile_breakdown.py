#!/usr/bin/env python3
"""Breakdown of the CPU profiles `edgegate-bench --profile` writes for the
mtls scenarios (edgegate or gotls): the share of the samples spent in each
step of a connection, first matching rule on the sample's stack wins, and
the share of the steps only edgegate has (marked *: what it adds to
crypto/tls). Several profiles are merged.

    python3 bench/profile_breakdown.py OUT/profiles/edgegate-mtls-full-*.pprof
"""
import subprocess, sys, re, collections
out = subprocess.run(["go", "tool", "pprof", "-traces"] + sys.argv[1:], capture_output=True, text=True).stdout
RULES = [
    ("tls handshake: clientauth.Verify (edgegate's verifier, cached chains)", "clientauth.(*Verifier).Verify"),
    ("tls handshake: crypto/tls", "crypto/tls.(*Conn).Handshake"),
    ("upstream dial", "upstream.(*Pool).Dial"), ("upstream dial", "net.Dial"), ("upstream dial", "net.(*Dialer)"),
    ("upstream dial", "relay.DialStart"), ("upstream dial", "relay.(*loop).connected"),
    ("copy / close", "relay.Pipe"), ("copy / close", "relay.(*pipeState)"), ("copy / close", "io.Copy"),
    ("copy / close", "crypto/tls.(*Conn).CloseWrite"), ("copy / close", "crypto/tls.(*Conn).Close"),
    ("copy / close", "relay.(*loop).finish"), ("copy / close", "relay.(*loop).move"),
    ("relay loop: wait, tasks, expiry", "relay.(*loop).run"),
    ("* log line", "log/slog."), ("* log line", "gateway.(*logHandler)"),
    ("metrics scrape (the harness reads /metrics once a repetition)", "promhttp."),
    ("* metrics", "prometheus"),
    ("* finish/end other", "gateway.(*Server).end"), ("* finish/end other", "gateway.(*Server).finish"),
    ("* PROXY header (edgegate: TLSTLVs, Encode)", "proxyheader."),
    ("PROXY header (gotls)", "proxyproto."),
    ("* tls.Config.Clone", "crypto/tls.(*Config).Clone"),
    ("* net.FileConn / fileConn", "net.FileConn"), ("* net.FileConn / fileConn", "os.NewFile"), ("* net.FileConn / fileConn", "newFileConn"),
    ("* hello parse (sni)", "sni."),
    ("accept", "gateway.accept4"), ("accept", "net.(*TCPListener).Accept"),
    ("hello read (unix.Read: tls.Server reads it too)", "unix.Read"),
    ("* route/lookup/admit/track", "gateway.(*Server).lookup"), ("* route/lookup/admit/track", "gateway.(*Server).admit"),
    ("* route/lookup/admit/track", "gateway.(*Server).track"), ("* route/lookup/admit/track", "gateway.(*Server).untrack"), ("* route/lookup/admit/track", "gateway.(*Server).setConn"),
    ("upstream write, park (forward)", "gateway.(*Server).forward"),
    ("* terminate other", "gateway.(*Server).terminate"),
    ("* accepted other (go stmt, session, hello copy)", "gateway.(*Server).accepted"),
    ("* serveFD/serveMTLSFD other", "gateway.(*Server).serveFD"), ("* serveFD/serveMTLSFD other", "gateway.(*Server).serveMTLSFD"),
    ("copy / close", "bench.goTLSServe"), ("accept", "bench.runGoTLS"),
    ("GC (background)", "runtime.gcBgMarkWorker"), ("GC (background)", "runtime.bgsweep"), ("GC (background)", "runtime.bgscavenge"),
    ("scheduler / netpoll / other runtime", "runtime."),
]
tot = 0; steps = collections.Counter()
for block in out.split("-----------+-------------------------------------------------------")[1:]:
    lines = [l for l in block.strip("\n").split("\n") if l.strip()]
    m = lines and re.match(r"\s*([\d.]+)(ms|s|us)\s+(.*)", lines[0])
    if not m: continue
    v = float(m.group(1)) * {"ms": 1e3, "s": 1e6, "us": 1}[m.group(2)]
    fr = [m.group(3).strip()] + [l.strip() for l in lines[1:]]
    tot += v
    for name, pat in RULES:
        if any(pat in f for f in fr): steps[name] += v; break
    else: steps["other: " + fr[-1]] += v
print(f"samples {tot/1e3:.0f} ms")
only = 0
for k, v in steps.most_common():
    print(f"  {k:60s} {100*v/tot:5.1f}%")
    if k.startswith("*"): only += v
print(f"  {'edgegate-only steps (*) together':60s} {100*only/tot:5.1f}%")
