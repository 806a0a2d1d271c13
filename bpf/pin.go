package bpf

import (
	"crypto/rand"
	"encoding/binary"
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
	slots := uint32(g.cfg.FlowTableSize)
	spec.Maps[guardMapFlowSlots].MaxEntries = slots
	if err := spec.Variables[guardVarFlowSlotCount].Set(slots); err != nil {
		return fmt.Errorf("bpf: size the flow table: %w", err)
	}
	g.dropIncompatiblePin(guardMapFlowSlots, slots)
	g.dropOldFlowTable()

	keyMap, key, err := g.openFlowHashKey(spec.Maps[guardMapFlowHashKey])
	if err != nil {
		return err
	}
	defer keyMap.Close()
	if err := spec.Variables[guardVarFlowKey].Set(key); err != nil {
		return fmt.Errorf("bpf: set the flow hash key: %w", err)
	}

	opts := &ebpf.CollectionOptions{
		Maps:            ebpf.MapOptions{PinPath: g.cfg.PinPath},
		MapReplacements: map[string]*ebpf.Map{guardMapFlowHashKey: keyMap},
	}
	if err := spec.LoadAndAssign(&g.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("bpf: load guard: %+v", ve)
		}
		return fmt.Errorf("bpf: load guard: %w", err)
	}
	if err := g.mapBlockHints(); err != nil {
		g.objs.Close()
		return err
	}
	if err := g.hintBlocklist(); err != nil {
		g.unmapBlockHints()
		g.objs.Close()
		return err
	}
	return nil
}

// unmapBlockHints undoes mapBlockHints.
func (g *Guard) unmapBlockHints() {
	if g.hints != nil {
		unix.Munmap(g.hints)
		g.hints = nil
	}
}

// openFlowHashKey opens the pinned map that keeps the flow hash's secret
// key, creating and pinning it if there is none, and returns it with the
// key, which it writes first if the map holds none: a pinned key is kept,
// since the pinned slots were placed with it. The program does not read
// the map but a constant the key is copied into before it is loaded
// (flow_key in guard.c): the map is where the key outlives the program,
// for a restart or an upgrade. Two edgegates that start at the same moment
// on an empty pin directory may each write a key and keep its own; their
// programs then place the same flows in different slots, and a stream one
// of them started is judged by the other as untracked (userspace judges
// it still).
func (g *Guard) openFlowHashKey(spec *ebpf.MapSpec) (*ebpf.Map, guardFlowHashKey, error) {
	var key guardFlowHashKey
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: g.cfg.PinPath})
	if err != nil {
		return nil, key, fmt.Errorf("bpf: open the flow hash key map: %w", err)
	}
	if err := m.Lookup(uint32(0), &key); err != nil {
		m.Close()
		return nil, key, fmt.Errorf("bpf: read the flow hash key: %w", err)
	}
	if key != (guardFlowHashKey{}) {
		return m, key, nil
	}
	var b [len(key.K) * 4]byte
	if _, err := rand.Read(b[:]); err != nil {
		m.Close()
		return nil, key, fmt.Errorf("bpf: make a flow hash key: %w", err)
	}
	for i := range key.K {
		key.K[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	if err := m.Put(uint32(0), key); err != nil {
		m.Close()
		return nil, key, fmt.Errorf("bpf: write the flow hash key: %w", err)
	}
	// Should another edgegate have written its key meanwhile, take
	// whichever is in the map now.
	if err := m.Lookup(uint32(0), &key); err != nil {
		m.Close()
		return nil, key, fmt.Errorf("bpf: read the flow hash key: %w", err)
	}
	return m, key, nil
}

// oldFlowTable is the pin name of the flow table before it became an array
// of slots (flow_slots): an LRU hash that nothing reads any more.
const oldFlowTable = "flows"

// dropOldFlowTable removes the pin of the old flow table, which holds a
// few dozen megabytes while pinned. A predecessor still running keeps its
// own reference until it exits.
func (g *Guard) dropOldFlowTable() {
	path := filepath.Join(g.cfg.PinPath, oldFlowTable)
	if _, err := os.Stat(path); err != nil {
		return
	}
	g.log.Info("bpf: removing the pin of the flow table of an older edgegate", "path", path)
	if err := os.Remove(path); err != nil {
		g.log.Warn("bpf: remove pinned map", "path", path, "err", err)
	}
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
