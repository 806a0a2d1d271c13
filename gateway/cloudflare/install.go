package cloudflare

import (
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Install writes the set d into dir in the canonical form the
// gateway reads: one prefix a line with a final newline, and the CA alone in
// PEM. Each file is written to a temporary name, flushed to disk, and
// renamed over the old one, so a reader never sees a partial file; the
// renames come only after all three are written, so a failure before them
// leaves the installed set whole.
func Install(dir string, d *Data) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{IPv4File, prefixLines(d.IPv4)},
		{IPv6File, prefixLines(d.IPv6)},
		{CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.CA.Raw})},
	}
	var temps []string
	defer func() {
		for _, t := range temps {
			os.Remove(t)
		}
	}()
	for _, f := range files {
		tmp, err := writeTemp(dir, f.name, f.data)
		if err != nil {
			return err
		}
		temps = append(temps, tmp)
	}
	for i, f := range files {
		if err := os.Rename(temps[i], filepath.Join(dir, f.name)); err != nil {
			return fmt.Errorf("install %s: %w (the set in %s may now be mixed; run the update again)", f.name, err, dir)
		}
	}
	temps = nil
	// The renames are durable only once the folder itself is synced.
	if df, err := os.Open(dir); err == nil {
		err = df.Sync()
		df.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return nil
}

// writeTemp writes data to a new hidden file next to name in dir, flushed
// and readable by the unprivileged edgegate user, and returns its path.
func writeTemp(dir, name string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(0o644), f.Sync(), f.Close())
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return f.Name(), nil
}

func prefixLines(ps []netip.Prefix) []byte {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return []byte(b.String())
}
