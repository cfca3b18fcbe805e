// The headless Chromium every page test drives (LOUPE_CHROMIUM, else Debian's /usr/bin/chromium).
'use strict';
const { chromium } = require('playwright-core');

function launch() {
  return chromium.launch({
    executablePath: process.env.LOUPE_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

module.exports = { launch };
