"""SVG screenshots of every dashboard screen, for the README: `python -m tui.snapshots [--socket P] DIR`.

Run it against a daemon with some traffic (`budget demo`) to see the screens as a user would.
"""

import argparse
import asyncio
from pathlib import Path

from tui.app import BudgetApp

SCREENS = [("1", "overview"), ("2", "spend"), ("3", "top"), ("4", "alerts"), ("5", "prices"), ("6", "usage")]


async def save_all(socket: str | None, directory: Path, timezone: str | None = None,
                   size: tuple[int, int] = (120, 34)) -> list[Path]:
    app = BudgetApp(socket=socket, timezone=timezone)
    paths = []
    async with app.run_test(size=size) as pilot:
        for key, name in SCREENS:
            await pilot.press(key)
            for _ in range(150):  # connected, and the screen's data fetched and drawn
                if name in app.loaded:
                    break
                await pilot.pause(0.1)
            await pilot.pause(0.3)
            paths.append(Path(app.save_screenshot(filename=f"tui-{name}.svg", path=str(directory))))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tui.snapshots")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--socket")
    parser.add_argument("--tz")
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(save_all(args.socket, args.directory, args.tz)):
        print(path)


if __name__ == "__main__":
    main()
