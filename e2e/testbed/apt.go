package testbed

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DebianMirror returns the first URI in the machine's apt sources that serves suite with
// component main. The mirror is read at run time because the reachable host differs
// between machines. Suites must match exactly, so "bookworm" never picks a
// bookworm-security or bookworm-updates source.
func DebianMirror(suite string) (string, error) {
	return debianMirror("/etc/apt", suite)
}

func debianMirror(aptDir, suite string) (string, error) {
	files, err := aptSourceFiles(aptDir)
	if err != nil {
		return "", err
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read apt source: %w", err)
		}
		var sources []aptSource
		if strings.HasSuffix(f, ".sources") {
			sources = parseDeb822(data)
		} else {
			sources = parseOneLine(data)
		}
		for _, s := range sources {
			if uri, ok := s.serves(suite); ok {
				return uri, nil
			}
		}
	}
	return "", fmt.Errorf("no apt source under %s serves suite %q with component main", aptDir, suite)
}

// aptSourceFiles lists source files in apt's own reading order: sources.list, then
// sources.list.d in name order. apt ignores other names (*.disabled, *.save), so do we.
func aptSourceFiles(aptDir string) ([]string, error) {
	var files []string
	if main := filepath.Join(aptDir, "sources.list"); fileExists(main) {
		files = append(files, main)
	}
	entries, err := os.ReadDir(filepath.Join(aptDir, "sources.list.d"))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read apt sources: %w", err)
	}
	for _, e := range entries {
		if name := e.Name(); strings.HasSuffix(name, ".list") || strings.HasSuffix(name, ".sources") {
			files = append(files, filepath.Join(aptDir, "sources.list.d", name))
		}
	}
	return files, nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

type aptSource struct {
	types, uris, suites, components []string
}

// serves reports the first usable URI when the source is a binary ("deb") source of suite
// with component main. Only schemes debootstrap can fetch from are usable.
func (s aptSource) serves(suite string) (string, bool) {
	if !slices.Contains(s.types, "deb") || !slices.Contains(s.suites, suite) || !slices.Contains(s.components, "main") {
		return "", false
	}
	for _, uri := range s.uris {
		if strings.HasPrefix(uri, "http://") || strings.HasPrefix(uri, "https://") || strings.HasPrefix(uri, "file:") {
			return uri, true
		}
	}
	return "", false
}

// parseOneLine reads the classic format: "deb [options] uri suite component...".
func parseOneLine(data []byte) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := dropOptions(strings.Fields(line))
		if len(fields) < 3 {
			continue
		}
		out = append(out, aptSource{
			types:      fields[:1],
			uris:       fields[1:2],
			suites:     fields[2:3],
			components: fields[3:],
		})
	}
	return out
}

// dropOptions removes a "[ key=value ... ]" block that may follow the type.
func dropOptions(fields []string) []string {
	if len(fields) < 2 || !strings.HasPrefix(fields[1], "[") {
		return fields
	}
	for i := 1; i < len(fields); i++ {
		if strings.HasSuffix(fields[i], "]") {
			return append(fields[:1:1], fields[i+1:]...)
		}
	}
	return nil
}

// parseDeb822 reads the deb822 format: stanzas of "Key: value" fields separated by blank
// lines, with indented continuation lines and "Enabled: no" to switch a stanza off.
func parseDeb822(data []byte) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	var last string
	flush := func() {
		if len(fields) > 0 && !strings.EqualFold(fields["enabled"], "no") {
			out = append(out, aptSource{
				types:      strings.Fields(fields["types"]),
				uris:       strings.Fields(fields["uris"]),
				suites:     strings.Fields(fields["suites"]),
				components: strings.Fields(fields["components"]),
			})
		}
		fields, last = map[string]string{}, ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			key, value, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(key))
			fields[last] = strings.TrimSpace(value)
		}
	}
	flush()
	return out
}
