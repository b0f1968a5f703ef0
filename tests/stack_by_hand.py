"""Test helpers: the canonical season stack of a WorldCereal location, and a local HTTP server.

The stack is assembled here with osgeo.gdal and numpy only, independently of
the plugin's own season-stack code, so encoder tests do not depend on it.
"""

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np

from fusedeo.models.encoders.base import WeightsInfo
from fusedeo.raster.bands import STACK_CHANNELS, Sensor

SEASONS = ("spring", "summer", "autumn", "winter")


def worldcereal_stack(folder: Path) -> np.ndarray:
    """Return the canonical stack ``(1, 4, 27, 64, 64)`` of one WorldCereal location.

    S2 L2A bands are placed by their band description (B01 and B09 stay NaN,
    as the files lack them); nodata 0 becomes NaN. S1 (20 m, 32 x 32 px) is
    repeated 2 x 2 onto the 10 m S2 grid, which has the same origin.
    """
    from osgeo import gdal

    stack = np.full((1, 4, len(STACK_CHANNELS), 64, 64), np.nan, dtype=np.float32)
    for season_index, season in enumerate(SEASONS):
        s2 = gdal.Open(str(folder / f"s2l2a_{season}.tif"))
        for band_number in range(1, s2.RasterCount + 1):
            band = s2.GetRasterBand(band_number)
            values = band.ReadAsArray().astype(np.float32)
            values[values == band.GetNoDataValue()] = np.nan
            channel = STACK_CHANNELS.index((Sensor.S2L2A, band.GetDescription()))
            stack[0, season_index, channel] = values
        s1 = gdal.Open(str(folder / f"s1_{season}.tif"))
        for band_number in range(1, s1.RasterCount + 1):
            band = s1.GetRasterBand(band_number)
            values = band.ReadAsArray().astype(np.float32)
            channel = STACK_CHANNELS.index((Sensor.S1, band.GetDescription()))
            stack[0, season_index, channel] = np.repeat(np.repeat(values, 2, axis=0), 2, axis=1)
    return stack


def weights_entry(path: Path, url: str, licence: str = "MIT") -> WeightsInfo:
    """Return a manifest entry for a file the test wrote."""
    data = path.read_bytes()
    return WeightsInfo(
        file_name=path.name,
        url=url,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        licence=licence,
    )


class FileServer:
    """HTTP server on 127.0.0.1 that serves files with Range support.

    ``files`` maps a URL path (``"/x.pt"``) to a local file. A path listed in
    ``drop_after`` gets only that many bytes on its first request before the
    connection closes; ``ignore_range`` makes the server send the whole file
    for every request. ``requests`` records ``(path, Range header)``.
    """

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        self.drop_after: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.requests.append((self.path, self.headers.get("Range")))
                path = server.files.get(self.path)
                if path is None:
                    self.send_error(404)
                    return
                size = path.stat().st_size
                start = 0
                range_header = self.headers.get("Range")
                if range_header and not server.ignore_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                limit = server.drop_after.pop(self.path, None)
                with open(path, "rb") as stream:
                    stream.seek(start)
                    remaining = size - start if limit is None else min(limit, size - start)
                    while remaining > 0:
                        chunk = stream.read(min(1 << 20, remaining))
                        self.wfile.write(chunk)
                        remaining -= len(chunk)
                if limit is not None:
                    # Drop the connection mid-file, as a flaky network would.
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
