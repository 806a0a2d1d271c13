package main

import (
	"log/slog"
	"net"
	"os"
	"strconv"
)

// ready announces that the gateway serves: to systemd (Type=notify) and to
// the predecessor of an upgrade. After an upgrade the new process also tells
// systemd that it is now the main process (the unit needs
// NotifyAccess=all).
func ready(log *slog.Logger, upgraded bool) {
	msg := "READY=1"
	if upgraded {
		msg = "MAINPID=" + strconv.Itoa(os.Getpid()) + "\n" + msg
	}
	if err := sdNotify(msg); err != nil {
		log.Warn("systemd notify failed", "err", err)
	}
	if err := reportReady(); err != nil {
		log.Error("upgrade: could not report ready to the old process", "err", err)
	}
}

// sdNotify sends a state message to systemd's notification socket, if this
// process runs under systemd with Type=notify. It is the whole of the
// protocol: one datagram to $NOTIFY_SOCKET.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
