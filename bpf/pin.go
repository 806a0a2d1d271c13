package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// bpffsRoot is where bpffs is conventionally mounted.
const bpffsRoot = "/sys/fs/bpf"

// load loads the programs and maps, pinning the stateful maps under
// cfg.PinPath or reusing them from there.
func (g *Guard) load() error {
	if err := ensureBPFFS(g.cfg.PinPath); err != nil {
		return err
	}
	spec, err := loadGuard()
	if err != nil {
		return fmt.Errorf("bpf: %w", err)
	}
	spec.Maps[guardMapFlows].MaxEntries = uint32(g.cfg.FlowTableSize)
	g.dropIncompatiblePin(guardMapFlows, uint32(g.cfg.FlowTableSize))

	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: g.cfg.PinPath}}
	if err := spec.LoadAndAssign(&g.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("bpf: load guard: %+v", ve)
		}
		return fmt.Errorf("bpf: load guard: %w", err)
	}
	return nil
}

// dropIncompatiblePin removes a pinned map whose size no longer matches the
// configuration: keeping it would make the load fail, and its state (flows
// half-checked) is cheap to lose, unlike a failed start.
func (g *Guard) dropIncompatiblePin(name string, maxEntries uint32) {
	path := filepath.Join(g.cfg.PinPath, name)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return
	}
	defer m.Close()
	if m.MaxEntries() == maxEntries {
		return
	}
	g.log.Warn("bpf: pinned map has a different size, replacing it",
		"map", name, "pinned", m.MaxEntries(), "configured", maxEntries)
	if err := os.Remove(path); err != nil {
		g.log.Warn("bpf: remove pinned map", "path", path, "err", err)
	}
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf if nothing is mounted there and
// creates dir.
func ensureBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(bpffsRoot, &st); err != nil {
		return fmt.Errorf("bpf: statfs %s: %w", bpffsRoot, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("bpf: mount bpffs at %s: %w", bpffsRoot, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpf: create pin directory: %w", err)
	}
	return nil
}
