package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
)

// The control socket speaks one line each way: the client sends "reload" or
// "upgrade"; the process answers "ok" or "error: <why>" once it has acted.

// openControl listens on the configured control socket, replacing a stale
// one (a predecessor's, during an upgrade, which stops using it).
func (p *process) openControl() error {
	path := p.cfg.Path(p.cfg.ControlSocket)
	if path == "" {
		return nil
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	os.Chmod(path, 0o600)
	// Closing must not remove the file by itself: after an upgrade the
	// path names the successor's socket (see closeControl).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	p.control = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serveControl(c)
		}
	}()
	return nil
}

// closeControl stops answering on the control socket cfg names and, unless
// this process handed over to a successor (which has bound its own socket
// at the same path by now), removes the socket file.
func (p *process) closeControl(cfg *config.Config, handedOver bool) {
	if p.control == nil {
		return
	}
	p.control.Close()
	p.control = nil
	if !handedOver {
		os.Remove(cfg.Path(cfg.ControlSocket))
	}
}

func (p *process) serveControl(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 64)).ReadString('\n')
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	op := strings.TrimSpace(line)
	if op != "reload" && op != "upgrade" {
		fmt.Fprintf(c, "error: unknown request %q\n", op)
		return
	}
	notes, err := p.ask(op)
	if err != nil {
		fmt.Fprintf(c, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	if len(notes) > 0 {
		fmt.Fprintf(c, "ok; %s\n", strings.ReplaceAll(strings.Join(notes, "; "), "\n", " "))
		return
	}
	fmt.Fprintln(c, "ok")
}

// cmdSignal implements `edgegate reload` and `edgegate upgrade`: validate
// the configuration first (a file that would be refused is refused here,
// with FILE:LINE), then ask the running process, through its control socket
// (and report what it answered) or, without one, by signal to the process
// in the pid file.
func cmdSignal(op string, args []string, stdout, stderr io.Writer) int {
	path, code, ok := configFlag(op, args, stdout, stderr)
	if !ok {
		return code
	}
	cfg, err := config.Load(path, nil)
	if err == nil {
		_, err = gateway.NewServer(cfg, discardLogger())
	}
	// A reload through the control socket is the running process's to
	// judge, even of a file that does not load: it refuses it with the
	// same FILE:LINE, counts the refusal and keeps its configuration.
	sock := config.ControlSocketOf(path)
	if err != nil && (op != "reload" || sock == "") {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if sock != "" {
		answer, err := askControl(sock, op)
		if err != nil {
			fmt.Fprintf(stderr, "edgegate %s: %v\n", op, err)
			return 1
		}
		if answer != "ok" && !strings.HasPrefix(answer, "ok; ") {
			fmt.Fprintf(stderr, "edgegate %s: %s\n", op, answer)
			return 1
		}
		fmt.Fprintf(stdout, "%s: %s\n", op, answer)
		return 0
	}
	pidFile := cfg.Path(cfg.PIDFile)
	if pidFile == "" {
		fmt.Fprintf(stderr, "edgegate %s: the configuration names neither control_socket nor pid_file\n", op)
		return 1
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		fmt.Fprintf(stderr, "edgegate %s: %v\n", op, err)
		return 1
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		fmt.Fprintf(stderr, "edgegate %s: %s does not hold a process ID\n", op, pidFile)
		return 1
	}
	sig := map[string]syscall.Signal{"reload": syscall.SIGHUP, "upgrade": syscall.SIGUSR2}[op]
	if err := syscall.Kill(pid, sig); err != nil {
		fmt.Fprintf(stderr, "edgegate %s: signal %d: %v\n", op, pid, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: sent %v to %d (no control_socket: the result is in its log)\n", op, sig, pid)
	return 0
}

// askControl sends one request on the control socket and returns the answer.
func askControl(path, op string) (string, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// An upgrade waits for the new process to report ready.
	c.SetDeadline(time.Now().Add(upgradeTimeout + 10*time.Second))
	if _, err := fmt.Fprintln(c, op); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return "", errors.New("the process closed the control connection without answering")
		}
		return "", err
	}
	return strings.TrimSpace(line), nil
}
