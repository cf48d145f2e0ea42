#!/usr/bin/env python3
"""A real RTSP server on 127.0.0.1 for the RTSP source tests: Debian's
GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0) serving one
still image as live video (10 fps unless --fps) on three mounts:

  /h264     H.264 (x264enc, baseline, a key frame every 10 frames)
  /mjpeg    JPEG over RTP (RFC 2435)
  /switch   H.264 whose resolution changes every few seconds (WxH, then 2W x 2H)
  /vp8      VP8, a codec dla-edge does not decode (to check the refusal)
  /audio    audio only, no video track (to check the refusal)

With --user/--password every mount asks for HTTP digest authentication.
Prints "ready PORT" on stdout once it listens; runs until killed.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

H264 = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=2000 " \
       "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=-1"


def launch(image, width, height, fps, encoder):
    return (f"( filesrc location={image} ! jpegdec ! videoconvert ! videoscale "
            f"! video/x-raw,width={width},height={height} ! imagefreeze is-live=true "
            f"! video/x-raw,framerate={fps}/1 ! videoconvert ! video/x-raw,format=I420 ! {encoder} )")


def stamp_capture_time(factory, media):
    """RTCP sender reports that pair RTP time with the moment a frame was
    made (its capture time, as a camera's do), not with when it was sent."""

    def added(_bin, _sub, element):
        factory_of = element.get_factory()
        if factory_of is not None and factory_of.get_name() == "rtpbin":
            element.set_property("rtcp-sync-send-time", False)

    media.get_element().get_parent().connect("deep-element-added", added)


class Switching(GstRtspServer.RTSPMediaFactory):
    """H.264 whose caps change mid-stream: a new SPS with another size."""

    def __init__(self, image, width, height):
        super().__init__()
        self.image, self.width, self.height = image, width, height

    def do_create_element(self, url):
        pipeline = Gst.parse_launch(
            f"filesrc location={self.image} ! jpegdec ! videoconvert ! imagefreeze is-live=true "
            f"! video/x-raw,framerate=10/1 ! videoscale ! capsfilter name=size "
            f"caps=video/x-raw,width={self.width},height={self.height} "
            f"! videoconvert ! video/x-raw,format=I420 ! {H264}")
        size = pipeline.get_by_name("size")
        state = {"big": False}

        def flip():
            state["big"] = not state["big"]
            w, h = (self.width * 2, self.height * 2) if state["big"] else (self.width, self.height)
            size.set_property("caps", Gst.Caps.from_string(f"video/x-raw,width={w},height={h}"))
            return True

        GLib.timeout_add(3000, flip)
        return pipeline


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--image", required=True, help="a JPEG file to serve")
    p.add_argument("--size", default="512x256", help="WxH of the video")
    p.add_argument("--fps", type=int, default=10, help="frame rate")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    factories = {}
    for path, encoder in (("/h264", H264),
                          ("/mjpeg", "jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26"),
                          ("/vp8", "vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96")):
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(launch(args.image, width, height, args.fps, encoder))
        factories[path] = f
    audio = GstRtspServer.RTSPMediaFactory()
    audio.set_launch("( audiotestsrc is-live=true ! audioconvert ! mulawenc ! rtppcmupay name=pay0 )")
    factories["/audio"] = audio
    factories["/switch"] = Switching(args.image, width, height)

    if args.user:
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_digest(args.user, args.password, token)
        server.set_auth(auth)
    for path, f in factories.items():
        f.set_shared(True)
        f.connect("media-configure", stamp_capture_time)
        if args.user:
            f.add_role_from_structure(Gst.Structure.new_from_string(
                "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
        mounts.add_factory(path, f)

    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print(f"ready {args.port}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
