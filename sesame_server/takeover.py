"""Letting a route take a connection away from waitress (for WebSocket upgrades).

waitress is WSGI only: it parses the HTTP request and runs the app on a worker thread, but
cannot hand the connection over. Its channel is an asyncore dispatcher on the server's
event-loop thread, so taking the socket means, in order:
  1. on the event-loop thread (waitress's trigger runs `thunk`s there): remove the channel
     from the loop's map, so waitress never reads or writes that socket again;
  2. detach the file descriptor from waitress's socket object (its garbage collection
     must not close the connection) and give it to the caller in a new socket object;
  3. swallow whatever the WSGI response would write: the caller owns the bytes now.
The route sees a callable in the environ (TAKE_SOCKET); under any other WSGI server (an app
that embeds the API) it is absent and the route answers that upgrades need `sesame-tts
serve`. A WebSocket client sends nothing before the server's 101, so no byte of the
connection was read beyond the upgrade request.
"""

from __future__ import annotations

import socket
import threading

from waitress.channel import HTTPChannel
from waitress.task import WSGITask

TAKE_SOCKET = "sesame_tts.take_socket"
_LOOP_TIMEOUT_SECONDS = 5.0


class ConnectionGone(OSError):
    """The connection could not be taken (closed, or the event loop did not answer)."""


class TakeoverTask(WSGITask):
    taken = False

    def get_environment(self) -> dict:
        environ = super().get_environment()
        environ[TAKE_SOCKET] = self._take_socket
        return environ

    def _take_socket(self) -> socket.socket:
        channel = self.channel
        detached = threading.Event()

        def detach_on_loop() -> None:
            if channel.connected:
                channel.del_channel()  # off the loop's map: waitress forgets the socket
            detached.set()

        channel.server.trigger.pull_trigger(detach_on_loop)
        if not detached.wait(_LOOP_TIMEOUT_SECONDS) or not channel.connected:
            raise ConnectionGone("the client closed the connection before the upgrade")
        fd = channel.socket.detach()
        channel.connected = False  # waitress treats it as gone; it never closes our fd
        self.taken = True
        self.close_on_finish = True
        taken = socket.socket(fileno=fd)
        taken.setblocking(True)  # asyncore made it non-blocking; websockets' threads block on it
        taken.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small audio messages, at once
        return taken

    def write(self, data: bytes) -> None:
        if self.taken:  # the response object only existed for the app's own bookkeeping
            return
        super().write(data)

    def finish(self) -> None:
        if not self.taken:
            super().finish()


class TakeoverChannel(HTTPChannel):
    task_class = TakeoverTask
