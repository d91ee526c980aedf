"""Two clients chat through nginx over wss://, trusting only the self-signed
certificate. Run it in the directory that holds localhost.crt (see
docs/11-deploying.md); needs `pip install websockets`."""
import asyncio
import ssl

import websockets

TLS = ssl.create_default_context(cafile="localhost.crt")
URL = "wss://127.0.0.1:8443/"


async def main():
    async with websockets.connect(URL, ssl=TLS) as alice, websockets.connect(URL, ssl=TLS) as bob:
        for name, ws in (("alice", alice), ("bob", bob)):
            host, port = ws.local_address[:2]
            tls = ws.transport.get_extra_info("ssl_object").version()
            print(f"{name}: TCP {host}:{port} -> nginx {URL}, {tls}")
        await alice.send("hello over TLS")
        print("alice got:", await alice.recv())
        print("bob got:  ", await bob.recv())
        await bob.send("hi alice, bob here")
        print("alice got:", await alice.recv())
        print("bob got:  ", await bob.recv())


asyncio.run(main())
