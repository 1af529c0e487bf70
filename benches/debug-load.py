"""1,000 (or N) concurrent HTTP/1.1 GETs of one admin path; prints status codes and latency.

Usage: debug-load.py HOST PORT N PATH (benches/debug-load.sh runs it).
"""
import asyncio, sys, time, statistics
host, port, n, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
async def one():
    t=time.monotonic()
    try:
        r,w=await asyncio.open_connection(host,port)
        w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()); await w.drain()
        data=await r.read()
        w.close()
        code=int(data.split(b" ",2)[1]) if data else 0
        return time.monotonic()-t, code, len(data)
    except Exception as e:
        return time.monotonic()-t, -1, 0
async def main():
    res=await asyncio.gather(*[one() for _ in range(n)])
    lat=sorted(x[0] for x in res)
    codes={}
    for _,c,_ in res: codes[c]=codes.get(c,0)+1
    ok=[x for x in res if x[1]==200]
    print(f"{n} requests {path}: codes {codes}; latency p50 {lat[len(lat)//2]:.2f}s p99 {lat[int(len(lat)*0.99)-1]:.2f}s max {lat[-1]:.2f}s; 200-body {statistics.median(x[2] for x in ok)/1e6 if ok else 0:.2f} MB")
asyncio.run(main())
