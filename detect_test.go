package main

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestParseOSRelease(t *testing.T) {
	r := parseOSRelease([]byte(`# comment
NAME="Rocky Linux"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID='9.6'
PRETTY_NAME="Rocky \"Blue\" Onyx` + "\x1b[31m" + `"
BROKEN LINE
ID_LIKE_EXTRA=x
`))
	if r.ID != "rocky" || !slices.Equal(r.IDLike, []string{"rhel", "centos", "fedora"}) || r.VersionID != "9.6" {
		t.Errorf("parsed %+v", r)
	}
	if r.PrettyName != `Rocky "Blue" Onyx[31m` {
		t.Errorf("pretty name %q: control characters must go", r.PrettyName)
	}
	if got := parseOSRelease([]byte("ID=\"Ubu;ntu$(rm -rf)\"\n")).ID; got != "ubunturm-rf" {
		t.Errorf("ID sanitised to %q", got)
	}
}

// copyTree copies a fixture, symlinks as symlinks, so tests can write to it.
func copyTree(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Name() == ".gitkeep":
			return nil // only there because git cannot hold an empty directory
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// snapshot maps every path of a tree to its content hash or symlink target.
func snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		switch info, _ := d.Info(); {
		case info.Mode()&fs.ModeSymlink != 0:
			link, _ := os.Readlink(p)
			snap[rel] = "-> " + link
		case d.IsDir():
			snap[rel] = "dir"
		default:
			data, _ := os.ReadFile(p)
			sum := sha256.Sum256(data)
			snap[rel] = string(sum[:])
		}
		return nil
	})
	return snap
}

// changedPaths lists the paths that are new or differ after.
func changedPaths(before, after map[string]string) []string {
	var out []string
	for p, v := range after {
		if before[p] != v {
			out = append(out, p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			out = append(out, "removed "+p)
		}
	}
	sort.Strings(out)
	return out
}

// distroCases says, per fixture in testdata/rootfs, which family it is,
// which files a program of that distribution reads for its trust (each must
// end up holding our CAs and everything it held before), and exactly which
// files the hook may change or create.
var distroCases = []struct {
	fixture string
	family  string
	reads   []string
	changes []string
}{
	{"debian", "debian", []string{"/etc/ssl/certs/ca-certificates.crt", "/usr/lib/ssl/cert.pem"},
		[]string{"/etc/ssl/certs/ca-certificates.crt", "/usr/local/share/ca-certificates/*"}},
	{"ubuntu", "debian", []string{"/etc/ssl/certs/ca-certificates.crt", "/usr/lib/ssl/cert.pem"},
		[]string{"/etc/ssl/certs/ca-certificates.crt", "/usr/local/share/ca-certificates/*"}},
	{"distroless", "debian", []string{"/etc/ssl/certs/ca-certificates.crt"},
		[]string{"/etc/ssl/certs/ca-certificates.crt", "/usr/local/*"}},
	{"alpine", "alpine", []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"},
		[]string{"/etc/ssl/certs/ca-certificates.crt", "/usr/local/*"}},
	{"wolfi", "alpine", []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem", "/etc/pki/tls/certs/ca-bundle.crt"},
		[]string{"/etc/ssl/certs/ca-certificates.crt", "/usr/local/*"}},
	{"rhel", "rhel", rhelReads, rhelChanges},
	{"centos-stream", "rhel", rhelReads, rhelChanges},
	{"rocky", "rhel", rhelReads, rhelChanges},
	{"almalinux", "rhel", rhelReads, rhelChanges},
	{"oraclelinux", "rhel", rhelReads, rhelChanges},
	{"amazonlinux", "rhel", rhelBaseReads, rhelChanges},
	{"fedora", "rhel", append([]string{"/etc/ssl/certs/ca-certificates.crt"}, rhelReads...), rhelChanges},
	{"azurelinux", "rhel", rhelBaseReads, rhelChanges},
	{"mariner", "rhel", rhelBaseReads, rhelChanges},
	{"opensuse-leap", "suse", []string{"/etc/ssl/ca-bundle.pem", "/var/lib/ca-certificates/ca-bundle.pem"},
		[]string{"/var/lib/ca-certificates/ca-bundle.pem", "/etc/pki/trust/anchors/*"}},
	{"sles", "suse", []string{"/etc/ssl/ca-bundle.pem", "/var/lib/ca-certificates/ca-bundle.pem"},
		[]string{"/var/lib/ca-certificates/ca-bundle.pem", "/etc/pki/trust/anchors/*"}},
	{"arch", "arch", []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/cert.pem"},
		[]string{"/etc/ca-certificates/extracted/tls-ca-bundle.pem", "/etc/ca-certificates/trust-source/anchors/*"}},
	{"photon", "photon", []string{"/etc/pki/tls/certs/ca-bundle.crt"},
		[]string{"/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/certs/cainjekt.pem"}},
	{"no-os-release", "fallback", []string{"/etc/ssl/certs/ca-certificates.crt"},
		[]string{"/etc/ssl/certs/ca-certificates.crt"}},
}

var (
	rhelBaseReads = []string{"/etc/pki/tls/certs/ca-bundle.crt", "/etc/pki/tls/cert.pem",
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/pki/tls/certs/ca-bundle.trust.crt"}
	rhelReads   = append([]string{"/etc/ssl/cert.pem"}, rhelBaseReads...)
	rhelChanges = []string{"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
		"/etc/pki/ca-trust/extracted/openssl/ca-bundle.trust.crt", "/etc/pki/ca-trust/source/anchors/*"}
)

// allowed reports whether p matches one of the patterns: an exact path or a
// prefix ending in '*'.
func allowed(p string, patterns []string) bool {
	for _, pat := range patterns {
		if prefix, ok := strings.CutSuffix(pat, "*"); ok && strings.HasPrefix(p, prefix) || p == pat {
			return true
		}
		// Directories on the way to an allowed file may be created.
		if strings.HasPrefix(strings.TrimSuffix(pat, "*"), p+"/") {
			return true
		}
	}
	return false
}

func TestOSTrustStoreLayouts(t *testing.T) {
	ours := corpBundle(t)
	public := bundleSums(publicBundle(t))
	for _, tc := range distroCases {
		t.Run(tc.fixture, func(t *testing.T) {
			dir := copyTree(t, filepath.Join("testdata/rootfs", tc.fixture))
			before := snapshot(t, dir)
			root := imageRoot(t, dir)

			_, fam, err := detectDistro(root)
			if err != nil || fam.name != tc.family {
				t.Fatalf("detected family %q (%v), want %q", fam.name, err, tc.family)
			}
			in := newInjection(root, testStaging(t, ours.pem), nil, nil, ours, ours.pem)
			_, imageCerts, err := in.osStore(fam, true)
			if err != nil {
				t.Fatal(err)
			}
			if imageCerts != 3 {
				t.Errorf("the image's trust holds %d certificates, want the fixture's 3", imageCerts)
			}

			for _, p := range tc.reads {
				data, _, err := root.readFile(p, maxBundleSize)
				if err != nil {
					t.Errorf("%s: %v", p, err)
					continue
				}
				have := bundleSums(data)
				for _, c := range ours.certs {
					if !have[c.sum] {
						t.Errorf("%s lacks injected CA %s", p, c.id())
					}
				}
				for sum := range public {
					if !have[sum] {
						t.Errorf("%s lost a certificate the image trusted", p)
					}
				}
			}
			for _, p := range changedPaths(before, snapshot(t, dir)) {
				if !allowed(p, tc.changes) {
					t.Errorf("changed %s, which the hook has no business changing", p)
				}
			}
		})
	}
}

func TestScratchImageGetsATrustStore(t *testing.T) {
	ours := corpBundle(t)
	dir := copyTree(t, "testdata/rootfs/scratch")
	root := imageRoot(t, dir)
	_, fam, err := detectDistro(root)
	if err != nil || fam.name != "fallback" {
		t.Fatalf("family %q, %v", fam.name, err)
	}
	noTrust := append(publicBundle(t), ours.pem...) // as with CAINJEKT_BASE_BUNDLE
	staging := testStaging(t, noTrust)
	in := newInjection(root, staging, nil, nil, ours, noTrust)
	changes, imageCerts, err := in.osStore(fam, true)
	if err != nil {
		t.Fatal(err)
	}
	if imageCerts != 0 || len(changes) != 1 || changes[0].Action != "created" || changes[0].Added != 5 {
		t.Errorf("image certificates %d, changes %+v", imageCerts, changes)
	}
	data, err := os.ReadFile(filepath.Join(dir, "etc/ssl/certs/ca-certificates.crt"))
	if err != nil || string(data) != string(noTrust) {
		t.Errorf("created bundle: %v", err)
	}
	// An image without trust keeps the no-trust bundle for SSL_CERT_FILE,
	// and has no trust of its own for a rotation to rebuild from; an empty
	// bundle is no trust either.
	for _, image := range []string{"none", "empty"} {
		if image == "empty" {
			writeTree(t, dir, map[string]string{"/etc/ssl/certs/ca-certificates.crt": ""})
			staging = testStaging(t, noTrust)
			newInjection(root, staging, nil, nil, ours, noTrust).osStore(fam, true)
		}
		if data, _, _ := staging.readFile(stagedBundle, maxBundleSize); string(data) != string(noTrust) {
			t.Errorf("%s: bundle.pem is not the no-trust bundle", image)
		}
		if _, _, err := staging.stat(stagedImageTrust); err == nil {
			t.Errorf("%s: image-trust.pem staged", image)
		}
	}
}
