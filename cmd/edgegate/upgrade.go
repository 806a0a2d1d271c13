package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgegate/edgegate/gateway"
)

// Environment of a process started by an upgrade.
const (
	// envListeners lists the configured addresses of the inherited
	// listening sockets, one per line, in the order of their descriptors
	// (starting at 3).
	envListeners = "EDGEGATE_LISTENERS"
	// envReadyFD is the descriptor on which the new process writes "ready"
	// once it serves.
	envReadyFD = "EDGEGATE_READY_FD"
)

// upgradeTimeout bounds how long the old process waits for the new one.
const upgradeTimeout = time.Minute

// upgrade starts the binary now installed at this executable's path with
// the same arguments, hands it the listening sockets, and waits until it
// reports that it serves. On success the caller drains and exits; on any
// failure the new process is killed and this one keeps serving. The
// sockets are never closed in between, so no connection is refused: the
// kernel queues new ones for whichever process accepts first.
func (p *process) upgrade() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find executable: %w", err)
	}
	files, err := passableListenerFiles(p.srv)
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()

	var names []string
	cmd := exec.Command(exe, os.Args[1:]...)
	for addr, f := range files {
		names = append(names, addr)
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, w)
	cmd.Env = append(os.Environ(),
		envListeners+"="+strings.Join(names, "\n"),
		envReadyFD+"="+strconv.Itoa(3+len(names)))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	p.log.Info("upgrade: starting the new process", "executable", exe, "listeners", len(names))
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start %s: %w", exe, err)
	}
	w.Close()

	readyc := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if strings.TrimSpace(line) == "ready" {
			readyc <- nil
			return
		}
		if err == nil {
			err = fmt.Errorf("unexpected %q", line)
		}
		readyc <- fmt.Errorf("new process did not report ready: %w", err)
	}()
	select {
	case err = <-readyc:
	case <-time.After(upgradeTimeout):
		err = errors.New("new process did not report ready in time")
	}
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	// The new process is not this one's child in any way that matters: it
	// keeps running when this one exits.
	go cmd.Wait()
	p.log.Info("upgrade: new process serves; draining this one", "new_pid", cmd.Process.Pid)
	return nil
}

// passableListenerFiles returns a duplicate of each listening socket that
// os/exec can hand to a child without changing it. exec takes a file's
// descriptor with Fd, and Fd switches a socket file made by the net package
// to blocking mode. That mode belongs to the open socket, which this
// process's own listener shares: its next accept would then wait in the
// kernel, holding the listener, so that closing it for the drain hangs
// until one more client connects, and that client is dropped. A file that
// os.NewFile makes from a non-blocking descriptor is left as it is.
func passableListenerFiles(srv *gateway.Server) (map[string]*os.File, error) {
	files, err := srv.ListenerFiles()
	if err != nil {
		return nil, err
	}
	out := map[string]*os.File{}
	var ferr error
	for addr, f := range files {
		if ferr == nil {
			var nf *os.File
			if nf, ferr = dupNonblocking(f); ferr == nil {
				out[addr] = nf
			} else {
				ferr = fmt.Errorf("listener %s: %w", addr, ferr)
			}
		}
		f.Close()
	}
	if ferr != nil {
		for _, f := range out {
			f.Close()
		}
		return nil, ferr
	}
	return out, nil
}

// dupNonblocking duplicates f's descriptor without going through Fd.
func dupNonblocking(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// inheritedListeners returns the listening sockets an upgrading predecessor
// handed over, keyed by configured address.
func inheritedListeners() (map[string]*os.File, error) {
	list := os.Getenv(envListeners)
	if list == "" {
		return nil, nil
	}
	os.Unsetenv(envListeners)
	files := map[string]*os.File{}
	for i, addr := range strings.Split(list, "\n") {
		f := os.NewFile(uintptr(3+i), "listener "+addr)
		if f == nil {
			return nil, fmt.Errorf("inherited descriptor %d for %s is not open", 3+i, addr)
		}
		files[addr] = f
	}
	return files, nil
}

// reportReady tells an upgrading predecessor, if any, that this process
// serves.
func reportReady() error {
	v := os.Getenv(envReadyFD)
	if v == "" {
		return nil
	}
	os.Unsetenv(envReadyFD)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%s=%q", envReadyFD, v)
	}
	f := os.NewFile(uintptr(fd), "ready")
	defer f.Close()
	_, err = f.WriteString("ready\n")
	return err
}
