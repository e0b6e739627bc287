"""A legacy order receiver outside floodgate's code, in a process of its own.

It stamps each request with the monotonic clock as soon as its head has arrived, before it
reads the body or answers, and answers 200 with a reference. `GET /stamps` lists every stamp
and the order it carried, as JSON. It listens on 127.0.0.1 only, on the port the OS gives, and
prints `listening <port>` once ready; it exits when its standard input closes.
"""

import asyncio
import json
import sys
import time

stamps = []


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            stamped = time.monotonic()
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "GET" and target == "/stamps":
                answer = json.dumps(stamps).encode()
            else:
                order = json.loads(body or b"{}").get("order_id", "")
                stamps.append([stamped, order])
                answer = json.dumps({"reference": "ref-" + order}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(answer)).encode()
                + b"\r\n\r\n"
                + answer
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    loop = asyncio.get_running_loop()
    # Ends with the test: its standard input closes when the test process goes.
    await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
