package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/edgegate/edgegate/gateway/config"
)

// Probe tries on this host what `edgegate run` needs from it before it
// serves: that each listen address and metrics.listen can be bound, and,
// with the eBPF guard enabled, that each interface it attaches to exists.
// It is for `edgegate check`, not for loading a configuration: it binds
// sockets (closing them before they listen, so no connection lands on one)
// and reads /proc.
//
// A problem run would stop on is returned as a *config.Error. An address
// already held by the running edgegate, the process in the configuration's
// pid_file, is not one (check is run before a reload): it is returned as a
// note. What run would survive but an operator should hear about is a
// warning. Every note and warning starts with FILE:LINE.
func Probe(cfg *config.Config) (notes, warnings []string, err error) {
	p := &prober{cfg: cfg}
	p.pid, p.pidErr = readPIDFile(cfg.Path(cfg.PIDFile))
	for i, l := range cfg.Listen {
		if err := p.bind("listen address", l.Address, l.ReusePort, "listen", i, "address"); err != nil {
			return nil, nil, err
		}
	}
	if addr := cfg.Metrics.Listen; addr != "" {
		if err := p.bind("metrics.listen", addr, true, "metrics", "listen"); err != nil {
			return nil, nil, err
		}
	}
	if e := cfg.EBPF; e.Enabled {
		for j, name := range e.Interfaces {
			if _, err := net.InterfaceByName(name); err == nil {
				continue
			}
			if e.Required {
				return nil, nil, cfg.ErrAt(fmt.Sprintf("ebpf.interfaces: no interface %q on this host, and ebpf.required is true: run would stop", name), "ebpf", "interfaces", j)
			}
			p.warn(fmt.Sprintf("ebpf.interfaces: no interface %q on this host: run would start without the eBPF guard", name), "ebpf", "interfaces", j)
		}
	}
	return p.notes, p.warnings, nil
}

// prober holds what Probe has found so far.
type prober struct {
	cfg      *config.Config
	pid      int   // the running edgegate's, from pid_file; 0: none
	pidErr   error // why pid_file could not be read
	notes    []string
	warnings []string
}

func (p *prober) note(msg string, path ...any) {
	p.notes = append(p.notes, p.cfg.ErrAt(msg, path...).Error())
}

func (p *prober) warn(msg string, path ...any) {
	p.warnings = append(p.warnings, p.cfg.ErrAt(msg, path...).Error())
}

// bind tries addr, named what in messages and found at path in the file;
// shared says the socket edgegate opens there sets SO_REUSEPORT (a
// listener with reuse_port, the metrics endpoint).
func (p *prober) bind(what, addr string, shared bool, path ...any) error {
	if _, port, err := net.SplitHostPort(addr); err == nil {
		if n, err := net.LookupPort("tcp", port); err == nil && n == 0 {
			return nil // any free port
		}
	}
	bound, err := tryBind(addr, false)
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return p.cfg.ErrAt(fmt.Sprintf("%s %s cannot be bound: %v", what, addr, err), path...)
	}
	switch errno {
	case syscall.EADDRINUSE:
	case syscall.EACCES:
		p.warn(fmt.Sprintf("%s %s: cannot try to bind it as this user: %v (ports below 1024 need root or CAP_NET_BIND_SERVICE, which edgegate's unit grants)", what, addr, errno), path...)
		return nil
	default:
		return p.cfg.ErrAt(fmt.Sprintf("%s %s cannot be bound: %v", what, addr, errno), path...)
	}

	held, heldErr := p.heldByRunning(bound)
	if held {
		p.note(fmt.Sprintf("%s %s is held by the running edgegate (pid %d)", what, addr, p.pid), path...)
		return nil
	}
	// A listener with reuse_port shares its address on purpose (several
	// edgegate processes on one host); only sockets of the same user that
	// also set SO_REUSEPORT can share one.
	if _, err := tryBind(addr, true); shared && err == nil {
		p.warn(fmt.Sprintf("%s %s is also held by another process's socket that shares it (SO_REUSEPORT, same user): "+
			"the kernel would split new connections between that process and edgegate; "+
			"right for several edgegate processes on one host, wrong for a leftover one", what, addr), path...)
		return nil
	}
	msg := fmt.Sprintf("%s %s cannot be bound: address already in use", what, addr)
	switch {
	case p.pidErr != nil:
		msg += fmt.Sprintf(" (pid_file: %v)", p.pidErr)
	case heldErr != nil:
		msg += fmt.Sprintf(" (pid_file names pid %d, whose sockets cannot be read: %v)", p.pid, heldErr)
	case p.pid != 0:
		msg += fmt.Sprintf(", not by the running edgegate (pid %d)", p.pid)
	}
	return p.cfg.ErrAt(msg, path...)
}

// heldByRunning reports whether the running edgegate holds a socket
// listening where addr was bound.
func (p *prober) heldByRunning(addr netip.AddrPort) (bool, error) {
	if p.pid == 0 {
		return false, nil
	}
	inodes, err := listeningInodes(addr)
	if err != nil || len(inodes) == 0 {
		return false, err
	}
	return holdsSocket(p.pid, inodes)
}

// readPIDFile returns the process ID in a pid file; 0 when no pid file is
// configured or it does not exist (no edgegate is running).
func readPIDFile(path string) (int, error) {
	if path == "" {
		return 0, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s does not hold a process ID", path)
	}
	return pid, nil
}

// errBound ends a probe's net.Listen between bind and listen.
var errBound = errors.New("bound")

// tryBind binds a TCP socket to addr as ListenTCP would, with SO_REUSEADDR
// and, when reusePort, SO_REUSEPORT, and closes it without listening: a
// socket that joined a running edgegate's SO_REUSEPORT group and listened
// would take a share of its connections and reset them. It returns the
// address bound, resolved, and the error of the bind.
func tryBind(addr string, reusePort bool) (netip.AddrPort, error) {
	var bound netip.AddrPort
	lc := net.ListenConfig{
		// net sets SO_REUSEADDR and IPV6_V6ONLY before calling Control, and
		// would bind just after.
		Control: func(network, address string, c syscall.RawConn) error {
			sa, ap, err := sockaddr(network, address)
			if err != nil {
				return err
			}
			bound = ap
			var berr error
			if err := c.Control(func(fd uintptr) {
				if reusePort {
					if berr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1); berr != nil {
						return
					}
				}
				berr = syscall.Bind(int(fd), sa)
			}); err != nil {
				return err
			}
			if berr != nil {
				return berr
			}
			return errBound
		},
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err == nil {
		ln.Close()
		return bound, errors.New("probe: listened instead of stopping after bind")
	}
	if errors.Is(err, errBound) {
		return bound, nil
	}
	return bound, err
}

// sockaddr is what net would bind a socket of network (tcp4, tcp6) to for
// address, as net passes it to Control ("127.0.0.1:443", ":443",
// "[fe80::1%eth0]:443"), and that address resolved.
func sockaddr(network, address string) (syscall.Sockaddr, netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	ip := netip.IPv4Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return nil, netip.AddrPort{}, err
		}
	}
	if network == "tcp4" {
		return &syscall.SockaddrInet4{Port: int(n), Addr: ip.Unmap().As4()}, netip.AddrPortFrom(ip.Unmap(), uint16(n)), nil
	}
	// A wildcard on an IPv6 socket is the dual-stack "::", as in net.
	if ip.Unmap().IsUnspecified() {
		ip = netip.IPv6Unspecified()
	}
	sa := &syscall.SockaddrInet6{Port: int(n), Addr: ip.As16()}
	if z := ip.Zone(); z != "" {
		if i, err := strconv.Atoi(z); err == nil {
			sa.ZoneId = uint32(i)
		} else if ifi, err := net.InterfaceByName(z); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa, netip.AddrPortFrom(ip.WithZone(""), uint16(n)), nil
}

// listeningInodes returns the inodes of the TCP sockets in this network
// namespace that listen on addr's port at an address that overlaps addr's:
// the same one, or a wildcard on either side.
func listeningInodes(addr netip.AddrPort) (map[string]bool, error) {
	inodes := map[string]bool{}
	want := addr.Addr().Unmap()
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		socks, err := readProcNetTCP(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		for _, s := range socks {
			got := s.local.Addr().Unmap()
			if s.state == tcpListen && s.local.Port() == addr.Port() &&
				(got == want || got.IsUnspecified() || want.IsUnspecified()) {
				inodes[s.inode] = true
			}
		}
	}
	return inodes, nil
}

const tcpListen = 0x0a // TCP_LISTEN in /proc/net/tcp's st column

// procSocket is one line of /proc/net/tcp or /proc/net/tcp6.
type procSocket struct {
	local netip.AddrPort
	state int
	inode string
}

// readProcNetTCP parses /proc/net/tcp or /proc/net/tcp6:
//
//	sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt   uid  timeout inode
//	0: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 ...
//
// An address is printed as 32-bit words in host byte order, the port in
// hex as a number.
func readProcNetTCP(path string) ([]procSocket, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var socks []procSocket
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		local, err := parseProcAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		state, err := strconv.ParseUint(fields[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("%s: state %q: %w", path, fields[3], err)
		}
		socks = append(socks, procSocket{local: local, state: int(state), inode: fields[9]})
	}
	return socks, sc.Err()
}

// parseProcAddr parses "0100007F:20FB" (127.0.0.1:8443).
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || (len(h) != 8 && len(h) != 32) {
		return netip.AddrPort{}, fmt.Errorf("address %q: want HEXADDR:HEXPORT", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(raw[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	ip, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// holdsSocket reports whether process pid has one of the sockets open.
func holdsSocket(pid int, inodes map[string]bool) (bool, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // not running: a stale pid file
	}
	if err != nil {
		return false, err
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			return true, nil
		}
	}
	return false, nil
}
