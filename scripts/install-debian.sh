#!/usr/bin/env bash
# Install the Debian packages rnnlab's applications read their data from, when missing.
# Speech: espeak-ng, flite and festival (with its kal, ked and slt HTS voices) synthesise training words;
# asterisk and klettres ship human test voices; qabcs-data a human speaker's letters to train on.
# Report: chromium renders report.html in the browser test; WenQuanYi Zen Hei draws Chinese in plots.
set -u
packages=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
          asterisk-core-sounds-en-wav klettres-data qabcs-data chromium fonts-wqy-zenhei)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "rnnlab: Debian packages missing (${missing[*]}); run as root or: sudo apt-get install -y ${missing[*]}" >&2
  echo "rnnlab: the speech application and the browser test are skipped without them." >&2
  exit 0
fi
echo "rnnlab: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "rnnlab: apt-get could not install ${missing[*]}; the applications that need them will say so" >&2
exit 0
