package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/gateway/config"
)

const (
	cloudflareService = "../../deploy/systemd/edgegate-cloudflare-update.service"
	cloudflareTimer   = "../../deploy/systemd/edgegate-cloudflare-update.timer"
)

// TestDeployCloudflareTimer checks the daily refresh of Cloudflare's data:
// the timer starts the service daily; the service downloads the three files
// Cloudflare publishes, then runs `edgegate cloudflare update` on exactly
// those files, into the folder the example configuration reads, reloading
// the configuration the main unit runs. Its update command is then run as
// written (binary, folder and configuration moved to this test's) against
// a running gateway, on the files the download would have left: the first
// run installs and reloads, the second finds nothing changed.
func TestDeployCloudflareTimer(t *testing.T) {
	t.Parallel()
	timer := readUnitFile(t, cloudflareTimer)
	for k, want := range map[string]string{"OnCalendar": "daily", "Persistent": "true", "WantedBy": "timers.target"} {
		if got := timer.get(t, k); got != want {
			t.Errorf("timer: %s=%s, want %s", k, got, want)
		}
	}
	if len(timer["Unit"]) != 0 {
		t.Errorf("timer: Unit=%q; it should start the service of its own name", timer["Unit"])
	}
	svc := readUnitFile(t, cloudflareService)
	for k, want := range map[string]string{"Type": "oneshot", "User": "edgegate", "StateDirectory": "edgegate"} {
		if got := svc.get(t, k); got != want {
			t.Errorf("service: %s=%s, want %s", k, got, want)
		}
	}
	if len(svc["ExecStart"]) != 2 {
		t.Fatalf("service: ExecStart %q; want the download, then the update", svc["ExecStart"])
	}
	// The download: -o NAME URL for each of Cloudflare's files.
	fetched := map[string]string{} // URL -> file name
	dl := strings.Fields(svc["ExecStart"][0])
	if dl[0] != "/usr/bin/curl" || !strings.Contains(svc["ExecStart"][0], " -f") {
		t.Errorf("service: download %q; want curl -f (an HTTP error must fail, not be installed)", svc["ExecStart"][0])
	}
	for i := 0; i+2 < len(dl); i++ {
		if dl[i] == "-o" {
			fetched[dl[i+2]] = dl[i+1]
		}
	}
	urls := map[string]string{ // flag -> what docs/operations.md fetches by hand
		"--ips-v4": "https://www.cloudflare.com/ips-v4",
		"--ips-v6": "https://www.cloudflare.com/ips-v6",
		"--ca":     "https://developers.cloudflare.com/ssl/static/authenticated_origin_pull_ca.pem",
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	update := strings.Fields(svc["ExecStart"][1])
	if len(update) < 3 || update[0] != "/usr/local/bin/edgegate" || update[1] != "cloudflare" || update[2] != "update" {
		t.Fatalf("service: update %q; want /usr/local/bin/edgegate cloudflare update ...", update)
	}
	flags := map[string]string{}
	for i := 3; i+1 < len(update); i += 2 {
		flags[update[i]] = update[i+1]
	}
	for flag, url := range urls {
		if !strings.Contains(string(doc), url) {
			t.Errorf("docs/operations.md does not fetch %s; the unit and the guide disagree", url)
		}
		if name, ok := fetched[url]; !ok || flags[flag] != name {
			t.Errorf("service: %s is %q, but curl writes %s to %q", flag, flags[flag], url, name)
		}
	}
	example, err := config.Load(deployConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	if flags["--dir"] != example.CloudflareData {
		t.Errorf("service: --dir %q, but the example configuration reads cloudflare_data %q", flags["--dir"], example.CloudflareData)
	}
	if want := "/var/lib/" + svc.get(t, "StateDirectory") + "/"; !strings.HasPrefix(flags["--dir"], want) {
		t.Errorf("service: --dir %q is outside its StateDirectory %s", flags["--dir"], want)
	}
	mainExec := readUnit(t).get(t, "ExecStart")
	if !strings.HasSuffix(mainExec, " --config "+flags["--reload"]) {
		t.Errorf("service: --reload %q, but edgegate.service runs %s", flags["--reload"], mainExec)
	}
	if example.ControlSocket == "" {
		t.Error("the example configuration has no control_socket: the service's reload would be a signal it cannot send as edgegate without an answer")
	}
	verifyUnits(t, cloudflareService, cloudflareTimer)

	// Run the update as the unit does.
	up := newTLSUpstream(t, "www.e2e.test")
	listen, metrics := freeAddr(t), freeAddr(t)
	_, cfg := startGateway(t, "control_socket: control.sock\ncloudflare_data: cloudflare\n"+
		gatewayConfig(listen, metrics, up.ln.Addr().String(), "info", "json", "30s"), true)
	work := t.TempDir()
	for flag, ref := range map[string]string{"--ips-v4": "ips-v4.txt", "--ips-v6": "ips-v6.txt", "--ca": "origin-pull-ca.pem"} {
		b, err := os.ReadFile(filepath.Join("../../gateway/cloudflare", ref))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, work, flags[flag], string(b))
	}
	line := strings.NewReplacer("/usr/local/bin/edgegate", edgegateBin, flags["--dir"], filepath.Join(filepath.Dir(cfg), "cloudflare"),
		flags["--reload"], cfg).Replace(svc["ExecStart"][1])
	runLine := func() string {
		f := strings.Fields(line)
		cmd := exec.Command(f[0], f[1:]...)
		cmd.Dir = work // the unit's WorkingDirectory
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
		return string(out)
	}
	if out := runLine(); !strings.Contains(out, "reload: ok") {
		t.Errorf("first run: %q; want the set installed and the gateway reloaded", out)
	}
	if out := runLine(); !strings.HasPrefix(out, "unchanged: ") {
		t.Errorf("second run: %q; want unchanged", out)
	}
	if _, h := getHealthz(t, metrics); h.Generation != 2 {
		t.Errorf("generation %d after one changed and one unchanged update, want 2", h.Generation)
	}
	if got := svc.get(t, "WorkingDirectory"); got != "/run/"+svc.get(t, "RuntimeDirectory") {
		t.Errorf("service: WorkingDirectory %s is not its RuntimeDirectory", got)
	}
}
