package caesura_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMECodeFromExamples keeps the README's Go code equal to the runnable
// examples: every ```go block must appear, line for line, in example_test.go.
func TestREADMECodeFromExamples(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	for line := range strings.SplitSeq(string(src), "\n") {
		body.WriteString(strings.TrimPrefix(line, "\t"))
		body.WriteByte('\n')
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 2 {
		t.Fatalf("README has %d Go blocks, want at least 2", len(blocks))
	}
	for i, b := range blocks {
		if !strings.Contains(body.String(), b[1]) {
			t.Errorf("README Go block %d is not in example_test.go (update the README from the example):\n%s", i+1, b[1])
		}
	}
}
