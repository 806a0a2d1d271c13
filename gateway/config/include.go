package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// origin is where a vhost from an included file was written: the file and
// its node there, so that errors about it name that file and line.
type origin struct {
	file string
	node *yaml.Node
}

// includedFile is the one shape an included file has.
type includedFile struct {
	VHosts []VHost `yaml:"vhosts"`
}

// includeVHosts reads the files that Include's globs match, in sorted
// order, and appends their vhosts to VHosts. A file matched twice, and the
// main file itself, are read once, as the main file.
func (c *Config) includeVHosts() error {
	self, _ := filepath.Abs(c.File)
	seen := map[string]bool{self: true}
	for j, pat := range c.Include {
		if pat == "" {
			return c.ErrAt("include: empty file name", "include", j)
		}
		matches, err := filepath.Glob(c.Path(pat))
		if err != nil {
			return c.ErrAt(fmt.Sprintf("include %q: %v", pat, err), "include", j)
		}
		if len(matches) == 0 && !strings.ContainsAny(pat, `*?[\`) {
			return c.ErrAt(fmt.Sprintf("include %q: no such file", pat), "include", j)
		}
		sort.Strings(matches)
		for _, m := range matches {
			abs, _ := filepath.Abs(m)
			if seen[abs] {
				continue
			}
			seen[abs] = true
			if fi, err := os.Stat(m); err == nil && fi.IsDir() {
				continue
			}
			data, err := os.ReadFile(m)
			if err != nil {
				return c.ErrAt(fmt.Sprintf("include %q: %v", pat, err), "include", j)
			}
			if err := c.includeFile(m, data); err != nil {
				return err
			}
		}
	}
	return nil
}

// includeFile decodes one included file strictly and appends its vhosts,
// remembering where each was written.
func (c *Config) includeFile(file string, data []byte) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return syntaxError(file, data, err)
	}
	if len(root.Content) == 0 {
		// An empty file holds no vhosts: a folder's placeholder, or a
		// file being written that the watch will see again.
		c.Included = append(c.Included, file)
		return nil
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return &Error{File: file, Line: doc.Line, Msg: "an included file holds one key, vhosts:, with a list of vhosts"}
	}
	var items *yaml.Node
	for k := 0; k+1 < len(doc.Content); k += 2 {
		if key := doc.Content[k]; key.Value != "vhosts" {
			return &Error{File: file, Line: key.Line, Msg: fmt.Sprintf("%q in an included file: included files hold only vhosts", key.Value)}
		}
		items = doc.Content[k+1]
	}
	var f includedFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return yamlError(file, err)
	}
	for k, v := range f.VHosts {
		c.VHosts = append(c.VHosts, v)
		c.origins = append(c.origins, origin{file: file, node: items.Content[k]})
	}
	c.Included = append(c.Included, file)
	return nil
}
