"""A looping RTSP server on GStreamer's gst-rtsp-server: ``python3 rtsp_server.py PORT PATTERN FPS``.

Run by the system Python (it needs the ``gi`` bindings from Debian's python3-gi); serves the numbered JPEG
files matching PATTERN (e.g. ``/tmp/x/frame%05d.jpg``) as RTP/JPEG on ``rtsp://127.0.0.1:PORT/scene``, looped,
and prints ``ready`` once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port, pattern, fps = sys.argv[1], sys.argv[2], int(sys.argv[3])
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f'( multifilesrc location="{pattern}" loop=true caps="image/jpeg,framerate={fps}/1" '
    "! jpegparse ! rtpjpegpay name=pay0 pt=26 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/scene", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
