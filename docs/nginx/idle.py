"""How long does a quiet wss:// connection through nginx live?

Usage: python3 idle.py SECONDS [talker]

Opens one connection and waits SECONDS for it to close. The client's own
keep-alive pings are off (ping_interval=None), so the only traffic is what
wschat sends (its pings, after --ping-interval of silence) and, with
`talker`, an unsolicited pong from the client every 20 seconds.
"""
import asyncio
import ssl
import sys
import time

import websockets

TLS = ssl.create_default_context(cafile="localhost.crt")
LIMIT = float(sys.argv[1])
NAME = sys.argv[2] if len(sys.argv) > 2 else "quiet"
START = time.monotonic()


def say(text):
    print(f"t={time.monotonic() - START:5.1f}s {NAME}: {text}", flush=True)


async def pong_every_20s(ws):
    while True:
        await asyncio.sleep(20)
        await ws.pong(b"still here")
        say("sent an unsolicited pong")


async def main():
    async with websockets.connect("wss://127.0.0.1:8443/", ssl=TLS, ping_interval=None) as ws:
        say("open")
        talker = asyncio.create_task(pong_every_20s(ws)) if NAME == "talker" else None
        try:
            await asyncio.wait_for(ws.wait_closed(), LIMIT)
            say(f"closed, code {ws.close_code}")
        except asyncio.TimeoutError:
            say(f"still open after {LIMIT:.0f}s")
        if talker:
            talker.cancel()


asyncio.run(main())
