//go:build !hookonly

package main

// Safe operations the plugin needs on its own staging tree, beside those of
// safefs.go: creating a container's directory, listing and removing them.
// None of them follows a symlink.

import (
	"math"
)

// readDirNames lists the directory p, following symlinks as d does.
func (d *safeDir) readDirNames(p string) ([]string, error) {
	return d.readDir(p, nil, math.MaxInt)
}
