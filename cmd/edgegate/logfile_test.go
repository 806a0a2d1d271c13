package main_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgegate/edgegate/gateway/eventually"
)

// fileRecords decodes the JSON log records in a log file.
func fileRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("%s: line is not JSON (%v): %s", path, err, l)
		}
		recs = append(recs, r)
	}
	return recs
}

// junkConnection sends HTTP to the gateway's TLS port and returns the
// client address its log record will name.
func junkConnection(t *testing.T, listen string) string {
	t.Helper()
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	expectNoResponse(t, c)
	return c.LocalAddr().String()
}

// waitInFile waits until the log file holds a record for which match is
// true.
func waitInFile(t *testing.T, path, what string, match func(map[string]any) bool) {
	t.Helper()
	eventually.Within(t, waitLimit, func() error {
		if _, err := os.Stat(path); err != nil {
			return err
		}
		for _, r := range fileRecords(t, path) {
			if match(r) {
				return nil
			}
		}
		return fmt.Errorf("%s holds no record of %s", path, what)
	})
}

func connectionOf(client string) func(map[string]any) bool {
	return func(r map[string]any) bool { return r["msg"] == "connection" && r["client"] == client }
}

// TestLogFileReopen: with log.file, every record goes to stderr and to the
// file (relative to the configuration's folder). Renamed as logrotate does
// and followed by SIGUSR1, the file is created again under its name and
// the log goes on there, nothing more in the renamed one; a reload that
// names another file moves the log to it.
func TestLogFileReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	listen := freeAddr(t)
	cfgText := func(file string) string {
		return yamlf(`
listen: [{address: %q}]
log: {level: debug, format: json, file: %s}
vhosts:
  - {name: www, hosts: [www.e2e.test], mode: passthrough, upstream: {address: "127.0.0.1:9"}}
`, listen, file)
	}
	cfg := writeFile(t, dir, "edgegate.yaml", cfgText("logs/edgegate.log"))
	logs := filepath.Join(dir, "logs")
	if err := os.Mkdir(logs, 0o750); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(logs, "edgegate.log")
	p := startEdgegate(t, "run", "--config", cfg)
	p.stderr.waitJSON(t, "that it is running", msgIs("edgegate running"))
	waitInFile(t, logFile, "the start", msgIs("edgegate running"))
	if fi, err := os.Stat(logFile); err != nil || fi.Mode().Perm()&0o007 != 0 {
		t.Errorf("log file: %v, mode %v; want it unreadable by others", err, fi.Mode())
	}

	before := junkConnection(t, listen)
	p.stderr.waitJSON(t, "the first connection", connectionOf(before))
	waitInFile(t, logFile, "the first connection", connectionOf(before))

	// logrotate: rename, then SIGUSR1.
	rotated := logFile + ".1"
	if err := os.Rename(logFile, rotated); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGUSR1)
	p.stderr.waitJSON(t, "the reopen", msgIs("log file reopened"))
	waitInFile(t, logFile, "the reopen", msgIs("log file reopened"))
	after := junkConnection(t, listen)
	p.stderr.waitJSON(t, "the second connection", connectionOf(after))
	waitInFile(t, logFile, "the second connection", connectionOf(after))
	for _, r := range fileRecords(t, rotated) {
		if connectionOf(after)(r) || msgIs("log file reopened")(r) {
			t.Errorf("the renamed file got a record written after the reopen: %v", r)
		}
	}
	for _, r := range fileRecords(t, logFile) {
		if connectionOf(before)(r) {
			t.Errorf("the new file holds a record written before the reopen: %v", r)
		}
	}

	// A reload that names another file.
	moved := filepath.Join(dir, "moved.log")
	writeFile(t, dir, "edgegate.yaml", cfgText(moved))
	p.signal(t, syscall.SIGHUP)
	p.stderr.waitJSON(t, "the reload", msgIs("configuration reloaded"))
	// The process moves the log just after the gateway reports the
	// reload: a connection ended in between is still logged in the old
	// file. So connect until one is logged (on stderr, then) in the new one.
	var third string
	eventually.Within(t, waitLimit, func() error {
		third = junkConnection(t, listen)
		p.stderr.waitJSON(t, "the third connection", connectionOf(third))
		if _, err := os.Stat(moved); err != nil {
			return err
		}
		for _, r := range fileRecords(t, moved) {
			if connectionOf(third)(r) {
				return nil
			}
		}
		return fmt.Errorf("%s holds no record of the third connection", moved)
	})
	for _, r := range fileRecords(t, logFile) {
		if connectionOf(third)(r) {
			t.Errorf("the previous log file got a record written after the reload moved the log: %v", r)
		}
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
}

// TestLogFileUnopenable: a log.file that cannot be opened stops `edgegate
// run` at the start with FILE:LINE; SIGUSR1 without a log.file does not
// kill the process (its default action would).
func TestLogFileUnopenable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "edgegate.yaml", yamlf(`
listen: [{address: %q}]
log:
  file: missing/edgegate.log
vhosts:
  - {name: www, hosts: [www.e2e.test], mode: passthrough, upstream: {address: "127.0.0.1:9"}}
`, freeAddr(t)))
	_, stderr, code := runEdgegate(t, "run", "--config", cfg)
	if want := cfg + `:3: log.file "missing/edgegate.log": open ` + filepath.Join(dir, "missing/edgegate.log") + ": no such file or directory\n"; code != 1 || stderr != want {
		t.Errorf("run with an unopenable log.file: exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}

	p, _ := startGateway(t, gatewayConfig(freeAddr(t), freeAddr(t), "127.0.0.1:9", "info", "json", "30s"), true)
	p.signal(t, syscall.SIGUSR1)
	p.stderr.waitJSON(t, "that SIGUSR1 had nothing to reopen", msgIs("SIGUSR1: no log.file to reopen"))
	if !p.running() {
		t.Fatal("SIGUSR1 stopped edgegate")
	}
}

// TestDeployLogrotate runs the real logrotate on deploy/logrotate/edgegate
// (its file and its signal moved to this test's process): the log file is
// renamed, edgegate opens a new one under the configured name, and the log
// goes on there.
func TestDeployLogrotate(t *testing.T) {
	t.Parallel()
	logrotate := requireTool(t, "logrotate")
	text, err := os.ReadFile("../../deploy/logrotate/edgegate")
	if err != nil {
		t.Fatal(err)
	}
	const signal = "systemctl kill --kill-whom=main --signal=SIGUSR1 edgegate.service"
	const logPath = "/var/log/edgegate/edgegate.log"
	if !strings.Contains(string(text), signal) || !strings.Contains(string(text), logPath+" {") {
		t.Fatalf("deploy/logrotate/edgegate does not rotate %s with %q:\n%s", logPath, signal, text)
	}
	// The path the rotation assumes is where the unit lets edgegate write.
	if dir := readUnit(t).get(t, "LogsDirectory"); filepath.Dir(logPath) != "/var/log/"+dir {
		t.Errorf("logrotate rotates %s; the unit's LogsDirectory is /var/log/%s", logPath, dir)
	}

	dir := t.TempDir()
	logFile := filepath.Join(dir, "edgegate.log")
	listen := freeAddr(t)
	cfg := writeFile(t, dir, "edgegate.yaml", yamlf(`
listen: [{address: %q}]
log: {level: debug, format: json, file: %s}
vhosts:
  - {name: www, hosts: [www.e2e.test], mode: passthrough, upstream: {address: "127.0.0.1:9"}}
`, listen, logFile))
	p := startEdgegate(t, "run", "--config", cfg)
	p.stderr.waitJSON(t, "that it is running", msgIs("edgegate running"))
	waitInFile(t, logFile, "the start", msgIs("edgegate running"))

	conf := strings.NewReplacer(logPath, logFile, signal, fmt.Sprintf("kill -USR1 %d", p.cmd.Process.Pid)).Replace(string(text))
	confFile := writeFile(t, dir, "logrotate.conf", conf)
	out, err := exec.Command(logrotate, "--force", "--state", filepath.Join(dir, "logrotate.state"), confFile).CombinedOutput()
	if err != nil {
		t.Fatalf("logrotate: %v\n%s", err, out)
	}
	waitInFile(t, logFile, "the reopen", msgIs("log file reopened"))
	rotated := fileRecords(t, logFile+".1")
	if len(rotated) == 0 || rotated[0]["msg"] != "edgegate running" {
		t.Errorf("the rotated file %s.1 does not hold the log from before: %v", logFile, rotated)
	}
	client := junkConnection(t, listen)
	waitInFile(t, logFile, "a connection after the rotation", connectionOf(client))
}
