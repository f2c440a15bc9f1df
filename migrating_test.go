//go:build !hookonly

package main

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docs/migrating.md tells natrontech/cainjekt's users what carries over.
// These tests hold its tables to the code: each name it says cainjekt reads
// is read, each default it gives is the default, each metric it points to
// is exported.

// docTable returns the rows of the first table under the heading, each
// cell's first `code` span ("" for a cell without one).
func docTable(t *testing.T, heading string) [][]string {
	t.Helper()
	doc, err := os.ReadFile("docs/migrating.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/migrating.md has no %q", heading)
	}
	code := regexp.MustCompile("`([^`]*)`")
	var rows [][]string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "## ") {
			break
		}
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| natrontech") || strings.HasPrefix(line, "| |") {
			continue
		}
		var row []string
		for _, cell := range strings.Split(strings.Trim(line, "|"), "|") {
			m := code.FindStringSubmatch(cell)
			if m == nil {
				row = append(row, "")
				continue
			}
			row = append(row, m[1])
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		t.Fatalf("docs/migrating.md: no table under %q", heading)
	}
	return rows
}

func settingOf(env string) (setting, bool) {
	for _, s := range settings {
		if s.env == env {
			return s, true
		}
	}
	return setting{}, false
}

func TestMigratingSettings(t *testing.T) {
	documented := map[string]bool{}
	for _, row := range docTable(t, "## Settings") {
		theirs, ours, ourDefault := row[0], row[2], row[3]
		documented[theirs] = true
		s, ok := settingOf(ours)
		if !ok {
			t.Errorf("%s: cainjekt has no setting %s", theirs, ours)
			continue
		}
		if theirs != ours && aliases[s.flag] != theirs {
			t.Errorf("%s: cainjekt does not read it as %s", theirs, ours)
		}
		// The host binary's default is found at run time: the table names it.
		computed := s.flag == "host-binary" && ourDefault == hookBinaryName
		if ourDefault != "" && ourDefault != s.def && !computed {
			t.Errorf("%s: the table says the default is %q, it is %q", ours, ourDefault, s.def)
		}
	}
	for _, alias := range aliases {
		if !documented[alias] {
			t.Errorf("alias %s is not in docs/migrating.md", alias)
		}
	}
}

func TestMigratingAnnotations(t *testing.T) {
	for _, row := range docTable(t, "## Annotations") {
		name := strings.TrimPrefix(row[1], "<prefix>/")
		if !slices.Contains(annotationNames, name) || row[0] != row[1] {
			t.Errorf("annotation %s: cainjekt reads %v", row[0], annotationNames)
		}
	}
}

func TestMigratingProcessors(t *testing.T) {
	documented := map[string]bool{}
	for _, row := range docTable(t, "## Processors") {
		theirs, ours := row[0], row[1]
		documented[theirs] = true
		if got := processorList(theirs); len(got) != 1 || got[0] != ours || !slices.Contains(processorNames, ours) {
			t.Errorf("processor %s is read as %v, the table says %s", theirs, got, ours)
		}
	}
	for alias := range processorAliases {
		if !documented[alias] {
			t.Errorf("processor alias %s is not in docs/migrating.md", alias)
		}
	}
}

func TestMigratingMetrics(t *testing.T) {
	var buf bytes.Buffer
	busyMetrics(t).write(&buf)
	exposition := buf.String()
	for _, row := range docTable(t, "## Metrics") {
		series := row[1]
		family, labels, _ := strings.Cut(series, "{")
		if !strings.Contains(exposition, "\n# TYPE "+family+" ") {
			t.Errorf("%s: cainjekt exports no %s", row[0], family)
			continue
		}
		if labels != "" && !strings.Contains(exposition, "\n"+series+" ") {
			t.Errorf("%s: cainjekt exports no series %s", row[0], series)
		}
	}
}
