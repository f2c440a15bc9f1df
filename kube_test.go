//go:build !hookonly

package main

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAPIServer answers GET /api/v1/namespaces/NAME like the API server
// does, for the token it expects, and keeps what is POSTed to
// /api/v1/namespaces/NAME/events.
type fakeAPIServer struct {
	*httptest.Server
	token    atomic.Value // string
	requests atomic.Int32
	caFile   string
	// refuseEvents answers event posts as the API server does without RBAC.
	refuseEvents atomic.Bool

	mu     sync.Mutex
	posted []postedEvent
}

// postedEvent is an event POST as the fake API server received it.
type postedEvent struct {
	path, contentType string
	body              []byte
}

func newFakeAPIServer(t *testing.T, namespaces map[string]string) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{}
	f.token.Store("token-1")
	f.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		name, ok := strings.CutPrefix(r.URL.Path, "/api/v1/namespaces/")
		switch {
		case r.Header.Get("Authorization") != "Bearer "+f.token.Load().(string):
			http.Error(w, `{"kind":"Status","code":401}`, http.StatusUnauthorized)
		case r.Method == http.MethodPost:
			f.postEvent(w, r)
		case name == "forbidden":
			http.Error(w, `{"kind":"Status","code":403}`, http.StatusForbidden)
		case name == "slow":
			select { // answer after the client gave up
			case <-r.Context().Done():
			case <-time.After(2 * namespaceTimeout):
			}
		case !ok || namespaces[name] == "":
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
		default:
			io.WriteString(w, namespaces[name])
		}
	}))
	t.Cleanup(f.Close)
	f.caFile = filepath.Join(t.TempDir(), "ca.crt")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Certificate().Raw})
	if err := os.WriteFile(f.caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeAPIServer) postEvent(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/events") {
		http.Error(w, `{"kind":"Status","code":405}`, http.StatusMethodNotAllowed)
		return
	}
	if f.refuseEvents.Load() {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"kind":"Status","status":"Failure","message":"events is forbidden: User \"system:serviceaccount:cainjekt:cainjekt\" cannot create resource \"events\" in API group \"\" in the namespace \"shop\"","reason":"Forbidden","code":403}`)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.posted = append(f.posted, postedEvent{path: r.URL.Path, contentType: r.Header.Get("Content-Type"), body: body})
	f.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	w.Write(body)
}

// events returns the events posted so far.
func (f *fakeAPIServer) events() []postedEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.posted)
}

const teamA = `{"kind":"Namespace","metadata":{"name":"team-a","labels":{"cainjekt.natron.io/enabled":"true"},"annotations":{"cainjekt.natron.io/bundle":"tenant-a"}}}`

func newTestKubeClient(t *testing.T, f *fakeAPIServer) (*kubeClient, string, *metrics) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	zero := func() int { return 0 }
	m := newMetrics(zero, zero, func() []bundleSnapshot { return nil })
	k, err := newKubeClient(f.URL, f.caFile, tokenFile, newLogger(io.Discard, "text", 0), m)
	if err != nil {
		t.Fatal(err)
	}
	return k, tokenFile, m
}

func TestNamespaceLookup(t *testing.T) {
	f := newFakeAPIServer(t, map[string]string{"team-a": teamA})
	k, _, m := newTestKubeClient(t, f)
	ns, err := k.namespace(context.Background(), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := ns.metadata("cainjekt.natron.io/enabled"); v != "true" {
		t.Errorf("label: %q", v)
	}
	if v, _ := ns.metadata("cainjekt.natron.io/bundle"); v != "tenant-a" {
		t.Errorf("annotation: %q", v)
	}
	for name, want := range map[string]string{"forbidden": "403", "missing": "404", "slow": "deadline exceeded", "Bad_Name": "not a DNS label"} {
		if _, err := k.namespace(context.Background(), name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
	if m.namespaceLookups.get(lookupOK) != 1 || m.namespaceLookups.get(lookupError) != 3 {
		t.Errorf("lookups ok %d error %d", m.namespaceLookups.get(lookupOK), m.namespaceLookups.get(lookupError))
	}
}

func TestNamespaceLookupRereadsTheRotatedToken(t *testing.T) {
	f := newFakeAPIServer(t, map[string]string{"team-a": teamA})
	k, tokenFile, _ := newTestKubeClient(t, f)
	now := time.Now()
	k.now = func() time.Time { return now }
	f.token.Store("token-2")
	if _, err := k.namespace(context.Background(), "team-a"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("with the old token: %v", err)
	}
	if err := os.WriteFile(tokenFile, []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(namespaceRetry)
	if _, err := k.namespace(context.Background(), "team-a"); err != nil {
		t.Errorf("the rotated token was not read: %v", err)
	}
}

func TestNamespaceLookupCachesAndFallsBackToStaleAnswers(t *testing.T) {
	f := newFakeAPIServer(t, map[string]string{"team-a": teamA})
	k, _, m := newTestKubeClient(t, f)
	now := time.Now()
	k.now = func() time.Time { return now }
	ctx := context.Background()
	k.namespace(ctx, "team-a")
	k.namespace(ctx, "team-a")
	if f.requests.Load() != 1 || m.namespaceLookups.get(lookupCached) != 1 {
		t.Errorf("requests %d, cached %d: the second lookup must come from the cache", f.requests.Load(), m.namespaceLookups.get(lookupCached))
	}
	f.token.Store("revoked") // the API server now refuses us
	now = now.Add(namespaceTTL + time.Second)
	if ns, err := k.namespace(ctx, "team-a"); err != nil || ns == nil || m.namespaceLookups.get(lookupStale) != 1 {
		t.Errorf("a failed lookup within %s must use the older answer: %v", namespaceStale, err)
	}
	now = now.Add(namespaceStale)
	if _, err := k.namespace(ctx, "team-a"); err == nil {
		t.Error("an answer older than the stale limit was used")
	}
}

// While the API server fails, a namespace is asked for again only every
// namespaceRetry: container starts do not each wait for its timeout.
func TestNamespaceLookupDoesNotRetryAFailureAtOnce(t *testing.T) {
	f := newFakeAPIServer(t, map[string]string{"team-a": teamA})
	k, _, m := newTestKubeClient(t, f)
	now := time.Now()
	k.now = func() time.Time { return now }
	ctx := context.Background()
	f.token.Store("revoked")
	for range 3 {
		if _, err := k.namespace(ctx, "team-a"); err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("lookup with a refused token: %v", err)
		}
	}
	if f.requests.Load() != 1 || m.namespaceLookups.get(lookupError) != 3 {
		t.Errorf("requests %d, errors counted %d: a failure must be kept for %s", f.requests.Load(), m.namespaceLookups.get(lookupError), namespaceRetry)
	}
	f.token.Store("token-1")
	now = now.Add(namespaceRetry)
	if _, err := k.namespace(ctx, "team-a"); err != nil || f.requests.Load() != 2 {
		t.Errorf("after %s the lookup must be tried again: %v, %d requests", namespaceRetry, err, f.requests.Load())
	}
}
