package main

// Which distribution an image is, and where its trust store lives.

import (
	"bufio"
	"bytes"
	"errors"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// maxOSReleaseSize bounds /etc/os-release; real ones are under 1 KiB.
	maxOSReleaseSize = 64 << 10
	// maxIDLike bounds the IDs of ID_LIKE kept; real ones name one to three.
	maxIDLike = 8
)

// osRelease holds the fields of os-release(5) that detection uses.
type osRelease struct {
	ID         string   `json:"id,omitempty"`
	IDLike     []string `json:"id_like,omitempty"`
	VersionID  string   `json:"version_id,omitempty"`
	PrettyName string   `json:"pretty_name,omitempty"`
}

// parseOSRelease parses os-release(5): KEY=value lines, values optionally
// quoted, shell escapes inside double quotes. Unknown keys, comments and
// malformed lines are ignored; IDs are reduced to the characters the format
// allows, so an image cannot smuggle anything into logs or status.
func parseOSRelease(data []byte) osRelease {
	var r osRelease
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxOSReleaseSize)
	for sc.Scan() {
		key, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		value = unquoteOSRelease(value)
		switch key {
		case "ID":
			r.ID = osReleaseID(value)
		case "ID_LIKE":
			r.IDLike = nil
			for _, id := range strings.Fields(value) {
				if id = osReleaseID(id); id != "" && len(r.IDLike) < maxIDLike {
					r.IDLike = append(r.IDLike, id)
				}
			}
		case "VERSION_ID":
			r.VersionID = osReleaseID(value)
		case "PRETTY_NAME":
			r.PrettyName = printable(value, 128)
		}
	}
	return r
}

func unquoteOSRelease(v string) string {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		q := v[0]
		v = v[1 : len(v)-1]
		if q == '"' {
			v = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`").Replace(v)
		}
	}
	return v
}

// osReleaseID keeps what os-release allows in ID fields: lower-case letters,
// digits, '.', '_' and '-', at most 64 of them.
func osReleaseID(v string) string {
	v = strings.ToLower(v)
	if len(v) > 64 {
		v = v[:64]
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return -1
	}, v)
}

// distroFamily is a group of distributions that share a trust store layout.
type distroFamily struct {
	name      string   // the family's processor is "os-" + name
	ids       []string // os-release IDs, matched against ID, then ID_LIKE
	bundles   []string // bundle files its programs read, the primary first
	anchorDir string   // where the distro's update tool takes single CAs from
	anchorExt string   // the file extension that tool requires
}

// processor is the name by which annotations include or exclude the family.
func (f distroFamily) processor() string { return "os-" + f.name }

// knownBundles is every bundle path a program may read by default: Go's
// crypto/x509 search list, which covers OpenSSL's defaults on each family.
// Whatever the distribution, each of these that exists is merged too, so an
// image that moved its bundle or mixes layouts is still covered.
var knownBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/tls/cacert.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

var families = []distroFamily{
	{
		name:    "debian",
		ids:     []string{"debian", "ubuntu"},
		bundles: []string{"/etc/ssl/certs/ca-certificates.crt"},
		// update-ca-certificates takes *.crt only.
		anchorDir: "/usr/local/share/ca-certificates", anchorExt: ".crt",
	},
	{
		name:      "alpine",
		ids:       []string{"alpine", "wolfi", "chainguard"},
		bundles:   []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"},
		anchorDir: "/usr/local/share/ca-certificates", anchorExt: ".crt",
	},
	{
		name: "rhel",
		ids:  []string{"rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn", "azurelinux", "mariner"},
		bundles: []string{
			"/etc/pki/tls/certs/ca-bundle.crt",
			"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
			"/etc/pki/tls/cert.pem",
			// OpenSSL's format with trust settings; plain CERTIFICATE blocks are valid in it.
			"/etc/pki/ca-trust/extracted/openssl/ca-bundle.trust.crt",
		},
		anchorDir: "/etc/pki/ca-trust/source/anchors", anchorExt: ".crt",
	},
	{
		name:      "suse",
		ids:       []string{"opensuse", "opensuse-leap", "opensuse-tumbleweed", "sles", "sled", "sle-micro", "sl-micro", "suse"},
		bundles:   []string{"/etc/ssl/ca-bundle.pem", "/var/lib/ca-certificates/ca-bundle.pem"},
		anchorDir: "/etc/pki/trust/anchors", anchorExt: ".pem",
	},
	{
		name:      "arch",
		ids:       []string{"arch", "archarm"},
		bundles:   []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/ca-certificates/extracted/tls-ca-bundle.pem"},
		anchorDir: "/etc/ca-certificates/trust-source/anchors", anchorExt: ".crt",
	},
	{
		name:    "photon",
		ids:     []string{"photon"},
		bundles: []string{"/etc/pki/tls/certs/ca-bundle.crt"},
		// The ca-certificates package rebuilds the bundle from /etc/ssl/certs/*.pem.
		anchorDir: "/etc/ssl/certs", anchorExt: ".pem",
	},
}

// fallbackFamily serves images without a recognised os-release: distroless,
// scratch, unknown distributions. It merges into whichever known bundles
// exist, or creates the most widely read one, and has no update tool.
var fallbackFamily = distroFamily{name: "fallback", bundles: []string{"/etc/ssl/certs/ca-certificates.crt"}}

// familyFor picks the family for an os-release: by ID first, then by each
// ID_LIKE in order, else the fallback.
func familyFor(r osRelease) distroFamily {
	for _, id := range append([]string{r.ID}, r.IDLike...) {
		for _, f := range families {
			if slices.Contains(f.ids, id) {
				return f
			}
		}
	}
	return fallbackFamily
}

// detectDistro reads the image's os-release (/etc/os-release, else
// /usr/lib/os-release). An image without one is not an error: it is served by
// the fallback family. A file that is there but unreadable (a FIFO, a device,
// too large) is reported, and detection falls back.
func detectDistro(root *safeDir) (osRelease, distroFamily, error) {
	var firstErr error
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		data, _, err := root.readFile(p, maxOSReleaseSize)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		r := parseOSRelease(data)
		return r, familyFor(r), nil
	}
	return osRelease{}, fallbackFamily, firstErr
}

// bundleCandidates lists the bundle paths to merge for a family: its own,
// primary first, then every other known path.
func bundleCandidates(f distroFamily) []string {
	out := append([]string(nil), f.bundles...)
	for _, p := range knownBundles {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
