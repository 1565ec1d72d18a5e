#!/usr/bin/env bash
# The tests' real peers from Debian: DCMTK tools, Orthanc and its DICOMweb plugin, and
# headless Chromium with its chromedriver for the web console's browser tests.
# Installs only what is missing, and only where apt can (root, or passwordless sudo);
# otherwise says what is missing: those tests skip, or fail when BRIDGE_REQUIRE_PEERS=1.
set -u
missing=()
command -v findscu >/dev/null 2>&1 || missing+=(dcmtk)
{ command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ]; } || missing+=(orthanc)
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so* >/dev/null 2>&1 || missing+=(orthanc-dicomweb)
# Debian's own browser: Selenium must never fetch one (tests/browser_harness.py).
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "missing Debian packages: ${missing[*]}; tests that need them will skip (or fail in CI)"
  exit 0
fi
echo "installing with apt-get: ${missing[*]}"
"${as_root[@]}" apt-get update -q >/dev/null \
  && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
  || echo "could not install ${missing[*]}; tests that need them will skip (or fail in CI)"
# The Debian package starts a system Orthanc on the default ports; the tests start their own.
if [[ " ${missing[*]} " == *" orthanc "* ]] && command -v systemctl >/dev/null 2>&1; then
  "${as_root[@]}" systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
exit 0
