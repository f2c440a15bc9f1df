package testbed

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestDebianMirror(t *testing.T) {
	apt := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		path := filepath.Join(apt, name)
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, []byte(content), 0o644))
	}
	write("sources.list", "# deb http://commented.example/debian bookworm main\n"+
		"deb-src http://src.example/debian bookworm main\n"+
		"deb [arch=amd64 signed-by=/k.gpg] http://security.example/debian-security bookworm-security main\n")
	write("sources.list.d/a.list.disabled-by-farm", "deb http://disabled.example/debian bookworm main\n")
	write("sources.list.d/b.sources", "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"+
		"Types: deb deb-src\n# a comment\nURIs: http://contrib.example/debian\nSuites: bookworm\nComponents: contrib\n\n"+
		"Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n bookworm-updates\nComponents: main\n")
	write("sources.list.d/c.list", "deb http://later.example/debian bookworm main\n")

	got, err := debianMirror(apt, "bookworm")
	must(t, err)
	if got != "http://mirror.example/debian" {
		t.Errorf("bookworm mirror = %q", got)
	}
	if got, err := debianMirror(apt, "bookworm-updates"); err != nil || got != "http://mirror.example/debian" {
		t.Errorf("continuation line: got %q, %v", got, err)
	}
	if got, err := debianMirror(apt, "trixie"); err == nil {
		t.Errorf("trixie: want an error, got %q", got)
	}
}

func TestParseCRILog(t *testing.T) {
	in := "2024-01-01T00:00:00.000000000Z stdout F hello\n" +
		"2024-01-01T00:00:00.000000001Z stderr P par\n" +
		"2024-01-01T00:00:00.000000002Z stderr F tial line\n" +
		"2024-01-01T00:00:00.000000003Z stdout F \n"
	if got, want := parseCRILog(in), "hello\npartial line\n\n"; got != want {
		t.Errorf("parseCRILog = %q, want %q", got, want)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/run/a\040b\134c`); got != `/run/a b\c` {
		t.Errorf("unescapeMount = %q", got)
	}
}

func TestServe(t *testing.T) {
	ca, err := NewCA("unit test CA")
	must(t, err)
	if !ca.Cert.IsCA || len(ca.Cert.SubjectKeyId) == 0 || string(ca.Cert.AuthorityKeyId) != string(ca.Cert.SubjectKeyId) {
		t.Fatalf("CA lacks CA:TRUE, SKI or AKI: %+v", ca.Cert)
	}
	srv, err := ca.Serve()
	must(t, err)
	defer srv.Close()

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(srv.URL)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if len(leaf.SubjectKeyId) == 0 || string(leaf.AuthorityKeyId) != string(ca.Cert.SubjectKeyId) {
		t.Errorf("leaf SKI/AKI wrong: ski %x aki %x", leaf.SubjectKeyId, leaf.AuthorityKeyId)
	}

	if _, err := http.Get(srv.URL); err == nil {
		t.Error("a client without the CA must reject the server")
	}
}

func TestCachedBuildsOnceUnderConcurrency(t *testing.T) {
	t.Setenv("CAINJEKT_TESTBED_CACHE", t.TempDir())
	var builds atomic.Int32
	build := func(tmp string) error {
		builds.Add(1)
		time.Sleep(50 * time.Millisecond) // widen the race window
		return os.WriteFile(filepath.Join(tmp, "artifact"), []byte("done"), 0o644)
	}
	var wg sync.WaitGroup
	dirs := make([]string, 8)
	for i := range dirs {
		wg.Go(func() {
			dir, err := cached("entry", build)
			if err != nil {
				t.Error(err)
			}
			dirs[i] = dir
		})
	}
	wg.Wait()
	if builds.Load() != 1 {
		t.Errorf("built %d times, want once", builds.Load())
	}
	for _, dir := range dirs {
		if data, err := os.ReadFile(filepath.Join(dir, "artifact")); err != nil || string(data) != "done" {
			t.Errorf("entry %s incomplete: %q %v", dir, data, err)
		}
	}

	if _, err := cached("broken", func(string) error { return errors.New("boom") }); err == nil {
		t.Error("a failed build must fail")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(CacheDir(), ".tmp-*")); len(leftovers) > 0 || isDir(filepath.Join(CacheDir(), "broken")) {
		t.Errorf("a failed build left %v behind", leftovers)
	}
}
