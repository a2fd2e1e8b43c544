package dockerd

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestPatchDaemonJSON(t *testing.T) {
	plain := Spec{Cache: "10.0.0.5:5500"}
	hub := Spec{Cache: "10.0.0.5:5500", MirrorDockerIO: true}
	for _, tc := range []struct {
		name         string
		in           string // "" with missing: no file
		missing      bool
		spec         Spec
		want         string // exact output, when set
		wantNil      bool   // no file to write
		wantInsecure []string
		wantMirrors  []string
		wantErr      string
	}{
		{
			name: "missing file is created", missing: true, spec: hub,
			want:         "{\n  \"insecure-registries\": [\n    \"10.0.0.5:5500\"\n  ],\n  \"registry-mirrors\": [\n    \"http://10.0.0.5:5500\"\n  ]\n}\n",
			wantInsecure: []string{"10.0.0.5:5500"}, wantMirrors: []string{"http://10.0.0.5:5500"},
		},
		{
			name: "empty file", in: "  \n", spec: plain,
			wantInsecure: []string{"10.0.0.5:5500"},
		},
		{
			name: "missing file, tls, no docker.io: nothing to write", missing: true,
			spec: Spec{Cache: "cache:443", TLS: true}, wantNil: true,
		},
		{
			name: "tls with docker.io: https mirror, not insecure", in: "{}",
			spec:        Spec{Cache: "cache:443", TLS: true, MirrorDockerIO: true},
			wantMirrors: []string{"https://cache:443"},
		},
		{
			name: "every other key and value kept in order; tabs kept",
			in:   "{\n\t\"log-driver\": \"json-file\",\n\t\"log-opts\": {\"max-size\": \"100m\", \"max-file\": \"3\"},\n\t\"exec-opts\": [\"native.cgroupdriver=systemd\"],\n\t\"bip\": \"172.17.0.1/16\",\n\t\"default-ulimits\": {\"nofile\": {\"Name\": \"nofile\", \"Hard\": 65536, \"Soft\": 65536}},\n\t\"live-restore\": true,\n\t\"max-concurrent-downloads\": 1e1,\n\t\"x-unknown-key\": null,\n\t\"insecure-registries\": [\"old.local:5000\", \"192.168.0.0/16\"],\n\t\"data-root\": \"/data/docker\"\n}\n",
			spec: hub,
			want: "{\n\t\"log-driver\": \"json-file\",\n\t\"log-opts\": {\n\t\t\"max-size\": \"100m\",\n\t\t\"max-file\": \"3\"\n\t},\n\t\"exec-opts\": [\n\t\t\"native.cgroupdriver=systemd\"\n\t],\n\t\"bip\": \"172.17.0.1/16\",\n\t\"default-ulimits\": {\n\t\t\"nofile\": {\n\t\t\t\"Name\": \"nofile\",\n\t\t\t\"Hard\": 65536,\n\t\t\t\"Soft\": 65536\n\t\t}\n\t},\n\t\"live-restore\": true,\n\t\"max-concurrent-downloads\": 1e1,\n\t\"x-unknown-key\": null,\n\t\"insecure-registries\": [\n\t\t\"old.local:5000\",\n\t\t\"192.168.0.0/16\",\n\t\t\"10.0.0.5:5500\"\n\t],\n\t\"data-root\": \"/data/docker\",\n\t\"registry-mirrors\": [\n\t\t\"http://10.0.0.5:5500\"\n\t]\n}\n",
		},
		{
			name:         "existing mirrors kept after ours; ours moved first",
			in:           `{"registry-mirrors": ["https://mirror.site", "http://10.0.0.5:5500/"], "insecure-registries": ["10.0.0.5:5500"]}`,
			spec:         hub,
			wantInsecure: []string{"10.0.0.5:5500"}, wantMirrors: []string{"http://10.0.0.5:5500", "https://mirror.site"},
		},
		{
			name: "already there: exact bytes back",
			in:   "{\"registry-mirrors\":[\"http://10.0.0.5:5500/\"],   \"insecure-registries\":[\"10.0.0.5:5500\"]}",
			spec: hub, want: "{\"registry-mirrors\":[\"http://10.0.0.5:5500/\"],   \"insecure-registries\":[\"10.0.0.5:5500\"]}",
		},
		{
			name: "no docker.io upstream: registry-mirrors untouched", in: `{"registry-mirrors": ["https://m"]}`, spec: plain,
			wantInsecure: []string{"10.0.0.5:5500"}, wantMirrors: []string{"https://m"},
		},
		{
			name: "null list", in: `{"insecure-registries": null}`, spec: plain,
			wantInsecure: []string{"10.0.0.5:5500"},
		},
		{name: "invalid JSON", in: "{\n  \"a\": 1,\n}\n", spec: plain, wantErr: "not valid JSON (line 3"},
		{name: "comments are not JSON", in: "// x\n{}", spec: plain, wantErr: "not valid JSON"},
		{name: "not an object", in: `["a"]`, spec: plain, wantErr: "not a JSON object"},
		{name: "two objects", in: `{} {}`, spec: plain, wantErr: "not valid JSON"},
		{name: "duplicate key", in: `{"debug": true, "debug": false}`, spec: plain, wantErr: `"debug" appears twice`},
		{name: "wrong type", in: `{"insecure-registries": "10.0.0.5:5500"}`, spec: plain, wantErr: "not a list of strings"},
		{name: "wrong mirror type", in: `{"registry-mirrors": [1]}`, spec: hub, wantErr: "not a list of strings"},
		{name: "bad cache", in: `{}`, spec: Spec{Cache: "a b"}, wantErr: `cache: registry "a b": want a host name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []byte
			if !tc.missing {
				in = []byte(tc.in)
			}
			out, err := Patch(in, tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q; out:\n%s", err, tc.wantErr, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantNil != (out == nil) {
				t.Fatalf("out nil = %v, want %v: %q", out == nil, tc.wantNil, out)
			}
			if out == nil {
				return
			}
			if tc.want != "" && string(out) != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", out, tc.want)
			}
			got, err := Parse(out)
			if err != nil {
				t.Fatalf("output does not parse: %v\n%s", err, out)
			}
			if tc.wantInsecure != nil && !slices.Equal(got.InsecureRegistries, tc.wantInsecure) {
				t.Errorf("insecure-registries %v, want %v", got.InsecureRegistries, tc.wantInsecure)
			}
			if tc.wantMirrors != nil && !slices.Equal(got.RegistryMirrors, tc.wantMirrors) {
				t.Errorf("registry-mirrors %v, want %v", got.RegistryMirrors, tc.wantMirrors)
			}
			// Every key of the input is still there with an equal value, apart from ours.
			var before, after map[string]any
			_ = json.Unmarshal(append([]byte(nil), in...), &before)
			if err := json.Unmarshal(out, &after); err != nil {
				t.Fatal(err)
			}
			for k, v := range before {
				if k != keyInsecure && k != keyMirrors && !reflect.DeepEqual(after[k], v) {
					t.Errorf("key %q: %v became %v", k, v, after[k])
				}
			}
			again, err := Patch(out, tc.spec)
			if err != nil || string(again) != string(out) {
				t.Errorf("second patch not a no-op (err %v):\n%s\n---\n%s", err, out, again)
			}
		})
	}
}

func TestDockerMissing(t *testing.T) {
	// As dockerd 20.10 prints `docker info --format '{{json .RegistryConfig}}'` (seen here).
	before := `{"IndexConfigs":{"docker.io":{"Mirrors":[],"Name":"docker.io","Official":true,"Secure":true}},"InsecureRegistryCIDRs":["127.0.0.0/8"],"Mirrors":[]}`
	after := `{"IndexConfigs":{"10.0.0.5:5500":{"Mirrors":[],"Name":"10.0.0.5:5500","Official":false,"Secure":false},"docker.io":{"Mirrors":["http://10.0.0.5:5500/"],"Name":"docker.io","Official":true,"Secure":true}},"InsecureRegistryCIDRs":["192.168.0.0/16","127.0.0.0/8"],"Mirrors":["http://10.0.0.5:5500/"]}`
	want := Config{InsecureRegistries: []string{"10.0.0.5:5500", "192.168.0.0/16"}, RegistryMirrors: []string{"http://10.0.0.5:5500"}}
	if m, err := Missing([]byte(after), want); err != nil || len(m) != 0 {
		t.Errorf("after reload: missing %v, err %v", m, err)
	}
	m, err := Missing([]byte(before), want)
	if err != nil || len(m) != 3 {
		t.Errorf("before reload: missing %v, err %v", m, err)
	}
	if m, err := Missing([]byte(before), Config{}); err != nil || len(m) != 0 {
		t.Errorf("nothing wanted: missing %v, err %v", m, err)
	}
	if _, err := Missing([]byte("Error: no such command"), want); err == nil {
		t.Error("garbage accepted")
	}
}

// dockerd re-reads a registry key on reload only when the file has it: reverting to a file
// without insecure-registries keeps the cache insecure until a restart (seen on 20.10).
func TestDockerKept(t *testing.T) {
	running := `{"IndexConfigs":{"10.0.0.5:5500":{"Name":"10.0.0.5:5500","Secure":false},"docker.io":{"Name":"docker.io","Secure":true}},"InsecureRegistryCIDRs":["127.0.0.0/8"],"Mirrors":["https://mirror.example/"]}`
	applied := Config{InsecureRegistries: []string{"10.0.0.5:5500"}, RegistryMirrors: []string{"http://10.0.0.5:5500", "https://mirror.example"}}
	original := Config{RegistryMirrors: []string{"https://mirror.example"}}
	kept, err := Kept([]byte(running), applied, original)
	if err != nil || !slices.Equal(kept, []string{"insecure-registries 10.0.0.5:5500"}) {
		t.Errorf("kept %v, err %v", kept, err)
	}
	if kept, _ := Kept([]byte(running), original, applied); len(kept) != 0 {
		t.Errorf("applying: kept %v", kept)
	}
	if _, err := Kept([]byte("nope"), applied, original); err == nil {
		t.Error("garbage accepted")
	}
}
