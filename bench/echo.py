"""The floor: a bare anyio + msgspec line server on a Unix socket that answers every frame at once."""

import sys

import anyio
import msgspec


class Frame(msgspec.Struct):
    id: int | str | None = None


async def main(path: str) -> None:
    decoder = msgspec.json.Decoder(Frame)
    encoder = msgspec.json.Encoder()

    async def serve(stream) -> None:
        buffer = b""
        async with stream:
            try:
                while True:
                    buffer += await stream.receive(65536)
                    *frames, buffer = buffer.split(b"\n")
                    out = bytearray()
                    for frame in frames:
                        out += encoder.encode({"id": decoder.decode(frame).id, "ok": True, "result": {}}) + b"\n"
                    if out:
                        await stream.send(bytes(out))
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    listener = await anyio.create_unix_listener(path)
    print("ready", flush=True)
    await listener.serve(serve)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], backend_options={"use_uvloop": True})
