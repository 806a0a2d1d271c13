package relay

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// Dial connects to an upstream address (host:port or unix:/path) within
// timeout.
func Dial(address string, timeout time.Duration) (net.Conn, error) {
	// No TCP keep-alive: timeouts.idle ends silent connections, and the
	// keep-alive setsockopt calls cost several percent of a short connection.
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	network, addr := "tcp", address
	if path, ok := strings.CutPrefix(address, "unix:"); ok {
		network, addr = "unix", path
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s: %w", address, err)
	}
	return c, nil
}
