package redislock

import (
	"strings"
	"testing"
)

func TestNewLibrary(t *testing.T) {
	a := func() map[string]*script {
		return map[string]*script{"one": newScript("return 1"), "two": newScript("return 2")}
	}
	l1, l2 := newLibrary(a()), newLibrary(a())
	if l1.name != l2.name || l1.code != l2.code {
		t.Errorf("the same scripts gave two libraries:\n%s\n%s", l1.code, l2.code)
	}
	if !strings.HasPrefix(l1.code, "#!lua name="+l1.name+"\n") {
		t.Errorf("library code starts %q, want the shebang with its name %q", l1.code[:min(40, len(l1.code))], l1.name)
	}
	b := a()
	b["two"] = newScript("return 3")
	l3 := newLibrary(b)
	if l3.name == l1.name {
		t.Errorf("changed script, same library name %q: versions would replace each other's functions", l1.name)
	}
	if b["one"].name != l3.name+"_one" || !strings.Contains(l3.code, "'"+b["one"].name+"'") {
		t.Errorf("function name %q is not the library's (%q) or not registered", b["one"].name, l3.name)
	}
}

func TestUnsupported(t *testing.T) {
	for msg, want := range map[string]bool{
		"ERR unknown command 'FCALL', with args beginning with: ":                         true,
		"NOPERM this user has no permissions to run the 'fcall' command":                  true,
		"NOPERM this user has no permissions to access one of the keys used as arguments": false,
		"ERR Function not found":                                false,
		"READONLY You can't write against a read only replica.": false,
	} {
		if got := unsupported(errString(msg)); got != want {
			t.Errorf("unsupported(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestCondSetRefused(t *testing.T) {
	for msg, want := range map[string]bool{
		"ERR syntax error":          true,
		"ERR unknown option 'IFEQ'": true,
		"WRONGTYPE Operation against a key holding the wrong kind of value": false,
		"READONLY You can't write against a read only replica.":             false,
		"LOADING Redis is loading the dataset in memory":                    false,
		"OOM command not allowed when used memory > 'maxmemory'.":           false,
	} {
		if got := condSetRefused(errString(msg)); got != want {
			t.Errorf("condSetRefused(%q) = %v, want %v", msg, got, want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
