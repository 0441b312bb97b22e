package templates_test

import (
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"text/template"

	"github.com/haconfd/haconfd/templates"
)

func TestNames(t *testing.T) {
	if got, want := templates.Names(), []string{templates.Base, templates.Galera}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
}

func TestFile(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    string // substring
		wantErr string
	}{
		{"base", templates.Base, "defaults\n", ""},
		{"galera", templates.Galera, "listen galera{{", ""},
		{"missing", "nope.tmpl", "", `embedded template "nope.tmpl": file does not exist`},
		{"no path escape", "../go.mod", "", `embedded template "../go.mod": file does not exist`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := templates.File(tc.file)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(got, tc.want) {
				t.Errorf("File(%q) = %q, %v", tc.file, got, err)
			}
		})
	}
}

// TestParse checks that every embedded template is valid text/template
// syntax (with stand-ins for the functions render provides).
func TestParse(t *testing.T) {
	for _, name := range templates.Names() {
		t.Run(name, func(t *testing.T) {
			text, err := templates.File(name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := template.New(name).Parse(text); err != nil {
				t.Errorf("parse: %v", err)
			}
		})
	}
}
