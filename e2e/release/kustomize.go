package release

import (
	"fmt"
	"os"
	"strings"
)

// SetImage points a kustomization at an image: its `images:` entry for
// name gets newName, tag and digest, as `kustomize edit set image
// NAME=NEWNAME:TAG@DIGEST` would set them. Every other line of the file,
// comments included, stays as it was, so that it can be done without
// kustomize. Kustomize renders the image as NEWNAME:TAG@DIGEST: the tag
// for people, the digest for the node, which pulls exactly what was
// pushed even if the tag is moved.
func SetImage(path, name, newName, tag, digest string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read kustomization: %w", err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	if n := len(lines); lines[n-1] == "" {
		lines = lines[:n-1]
	} else {
		lines[n-1] += "\n"
	}
	start := -1
	for i, line := range lines {
		if strings.HasPrefix(line, "images:") {
			if strings.TrimSpace(line) != "images:" {
				return fmt.Errorf("%s: images: is not a block list, which this edit needs (kustomize edit set image changes any)", path)
			}
			start = i
		}
	}
	entry := func(indent string) []string {
		return []string{
			indent + "- name: " + name + "\n",
			indent + "  newName: " + newName + "\n",
			indent + "  newTag: " + tag + "\n",
			indent + "  digest: " + digest + "\n",
		}
	}
	if start < 0 {
		lines = append(append(lines, "images:\n"), entry("  ")...)
		return writeKustomization(path, lines)
	}
	// The list: the lines after images: that are indented or items.
	end := start + 1
	for end < len(lines) && (strings.HasPrefix(lines[end], " ") || strings.HasPrefix(lines[end], "-")) {
		end++
	}
	var items []int // where each item of the list starts
	for i := start + 1; i < end; i++ {
		if strings.HasPrefix(strings.TrimLeft(lines[i], " "), "- ") {
			items = append(items, i)
		}
	}
	items = append(items, end)
	indent := "  "
	for k := 0; k+1 < len(items); k++ {
		first, next := items[k], items[k+1]
		indent = lines[first][:len(lines[first])-len(strings.TrimLeft(lines[first], " "))]
		if itemName(lines[first:next]) != name {
			continue
		}
		lines = append(append(append([]string{}, lines[:first]...), entry(indent)...), lines[next:]...)
		return writeKustomization(path, lines)
	}
	lines = append(append(append([]string{}, lines[:end]...), entry(indent)...), lines[end:]...)
	return writeKustomization(path, lines)
}

// itemName is the value of an images: item's name field.
func itemName(item []string) string {
	for i, line := range item {
		field := strings.TrimSpace(line)
		if i == 0 {
			field = strings.TrimSpace(strings.TrimPrefix(field, "-"))
		}
		if v, ok := strings.CutPrefix(field, "name:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return ""
}

func writeKustomization(path string, lines []string) error {
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644); err != nil {
		return fmt.Errorf("write kustomization: %w", err)
	}
	return nil
}
