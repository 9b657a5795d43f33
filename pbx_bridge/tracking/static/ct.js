/*
 * pbx-bridge call tracking snippet. Load it asynchronously with the site key:
 *   <script async src="https://PBX-BRIDGE-HOST/ct.js" data-site-key="SITE-KEY"></script>
 * It asks pbx-bridge for the number this visitor should see and swaps the site's number in
 * text, in tel: links and in elements marked with data-ct-phone. Any failure leaves the page
 * with its original numbers. When a heartbeat finds that the number went to another visitor, the
 * snippet starts a new session and shows its number instead, or the original numbers if that fails.
 * API: window.pbxCallTracking.number() returns a Promise of the number shown now, {e164, display},
 * or null. Each later change fires a "pbxcalltracking:number" event on window with the same value
 * in event.detail.
 */
(function () {
  "use strict";
  if (window.pbxCallTracking) return;

  var script = document.currentScript;
  if (!script) return;
  var siteKey = script.getAttribute("data-site-key");
  if (!siteKey) return;
  var api = (script.getAttribute("data-api") || new URL(script.src).origin) + "/api/v1/track/";

  var TAGS = ["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term",
              "gclid", "yclid", "fbclid", "msclkid"];
  var SKIPPED = { SCRIPT: 1, STYLE: 1, NOSCRIPT: 1, TEXTAREA: 1, INPUT: 1, SELECT: 1 };
  var state = {
    visitor: null,
    // The session whose pool number the page shows, or null while the page shows no pool number.
    session: null,
    // The site's own number, which the page shows again when tracking stops.
    siteNumber: null,
    // Every number the page may still show in place of the target: the site's own numbers and
    // the numbers of earlier sessions of this page view.
    replaced: [],
    patterns: [],
    target: null,
    // The formatted target for data-ct-phone elements. Null puts back their original content.
    display: null,
    originals: new WeakMap(),
    timer: null,
    observer: null,
    restarting: false
  };
  // Settles when the first session start ends, after which number() reads the number shown.
  var resolveReady;
  var ready = new Promise(function (resolve) { resolveReady = resolve; });

  window.pbxCallTracking = {
    number: function () { return ready.then(current); }
  };

  function store(kind) {
    try { return window[kind]; } catch (e) { return null; }
  }

  function read(kind, key) {
    var area = store(kind);
    try { return area ? area.getItem(key) : null; } catch (e) { return null; }
  }

  function write(kind, key, value) {
    var area = store(kind);
    try { if (area) area.setItem(key, value); } catch (e) { /* storage full or blocked */ }
  }

  function cookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  function visitorId() {
    var id = read("localStorage", "_ct_vid") || cookie("_ct_vid");
    if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
      id = window.crypto && crypto.randomUUID ? crypto.randomUUID()
        : Math.random().toString(36).slice(2) + Date.now().toString(36);
    }
    write("localStorage", "_ct_vid", id);
    document.cookie = "_ct_vid=" + id + "; path=/; max-age=31536000; SameSite=Lax";
    return id;
  }

  // The landing page, its referrer and its tags last for the browser tab's session.
  function landing() {
    var saved = read("sessionStorage", "_ct_landing");
    if (saved) {
      try { return JSON.parse(saved); } catch (e) { /* rebuilt below */ }
    }
    var query = new URLSearchParams(location.search);
    var data = { page_url: location.href, referrer: document.referrer || null };
    TAGS.forEach(function (tag) {
      var value = query.get(tag);
      if (value) data[tag] = value.slice(0, 200);
    });
    write("sessionStorage", "_ct_landing", JSON.stringify(data));
    return data;
  }

  function analyticsIds(body) {
    var ga = cookie("_ga");
    if (ga) body.ga = ga.split(".").slice(-2).join(".");
    var ym = cookie("_ym_uid");
    if (ym) body.ym_uid = ym;
  }

  function post(path, body) {
    var controller = window.AbortController ? new AbortController() : null;
    var timeout = setTimeout(function () { if (controller) controller.abort(); }, 5000);
    // A text/plain body keeps this a simple CORS request, so no preflight is needed.
    return fetch(api + path, {
      method: "POST",
      body: JSON.stringify(body),
      credentials: "omit",
      signal: controller ? controller.signal : undefined
    }).then(function (response) {
      clearTimeout(timeout);
      return response.json().then(function (data) {
        return { status: response.status, data: data };
      });
    });
  }

  // A regular expression for a number in its national form, optionally after the country
  // code or the national prefix, with spaces, dashes, dots or brackets between digits.
  function pattern(parts) {
    var gap = "[\\s\\u00a0().-]{0,3}";
    var prefixes = ["\\+" + parts.country_code, parts.country_code];
    if (parts.national_prefix) prefixes.push(parts.national_prefix);
    var digits = parts.national.split("").join(gap);
    return new RegExp("(?<![\\d+])((?:" + prefixes.join("|") + ")" + gap + ")?(" + digits + ")(?!\\d)", "g");
  }

  // Fill the digit positions of `written` with `digits`, keeping every other character.
  function fill(written, digits) {
    var index = 0;
    return written.replace(/\d/g, function (digit) {
      return index < digits.length ? digits.charAt(index++) : digit;
    });
  }

  function rewrite(text) {
    if (!state.target) return text;
    var national = state.target.national;
    var changed = text;
    state.patterns.forEach(function (regex) {
      regex.lastIndex = 0;
      changed = changed.replace(regex, function (match, prefix, number) {
        return (prefix || "") + fill(number, national);
      });
    });
    return changed;
  }

  function swapNode(node) {
    if (node.nodeType === 3) {
      var parent = node.parentNode;
      if (parent && SKIPPED[parent.nodeName]) return;
      var text = rewrite(node.nodeValue);
      if (text !== node.nodeValue) node.nodeValue = text;
      return;
    }
    if (node.nodeType !== 1 || SKIPPED[node.nodeName]) return;
    if (node.hasAttribute("data-ct-phone")) swapMarked(node);
    var links = node.nodeName === "A" ? [node] : node.querySelectorAll("a[href^='tel:']");
    Array.prototype.forEach.call(links, function (link) {
      var href = link.getAttribute("href") || "";
      if (href.indexOf("tel:") !== 0 || link.hasAttribute("data-ct-phone")) return;
      var replaced = rewrite(href);
      if (replaced !== href) link.setAttribute("href", replaced);
    });
    var marked = node.querySelectorAll("[data-ct-phone]");
    Array.prototype.forEach.call(marked, swapMarked);
    var walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    var texts = [];
    while (walker.nextNode()) texts.push(walker.currentNode);
    texts.forEach(swapNode);
  }

  // A data-ct-phone element shows the formatted number whatever it contained before. Its original
  // text and link are kept, so that the page gets them back when tracking stops.
  function swapMarked(element) {
    if (!state.originals.has(element)) {
      state.originals.set(element, { text: element.textContent, href: element.getAttribute("href") });
    }
    var original = state.originals.get(element);
    var text = state.display === null ? original.text : state.display;
    var href = state.display === null ? original.href : "tel:" + state.target.e164;
    if (element.textContent !== text) element.textContent = text;
    if (element.nodeName !== "A" || element.getAttribute("href") === href) return;
    if (href === null) element.removeAttribute("href");
    else element.setAttribute("href", href);
  }

  function watch() {
    if (state.observer || !window.MutationObserver) return;
    // Single-page sites add content later; swapped text no longer matches, so the
    // observer's own changes end here.
    state.observer = new MutationObserver(function (mutations) {
      mutations.forEach(function (mutation) {
        if (mutation.type === "characterData") swapNode(mutation.target);
        Array.prototype.forEach.call(mutation.addedNodes, swapNode);
      });
    });
    state.observer.observe(document.body, { childList: true, subtree: true, characterData: true });
  }

  function current() {
    if (!state.target || state.display === null) return null;
    return { e164: state.target.e164, display: state.display };
  }

  // Show `number` in place of the site's numbers and of every number shown before. After a lost
  // lease, the number shown before belongs to another visitor, so calls to it would go to them.
  // A null `display` puts back the original content of data-ct-phone elements.
  function show(number, display, siteNumbers) {
    var candidates = state.replaced.concat(siteNumbers, state.target ? [state.target] : []);
    var seen = {};
    state.replaced = candidates.filter(function (parts) {
      if (!parts || seen[parts.national]) return false;
      seen[parts.national] = true;
      return true;
    });
    state.target = number;
    state.display = display;
    state.patterns = state.replaced.filter(function (parts) {
      return !number || parts.national !== number.national;
    }).map(pattern);
    swapNode(document.body);
    watch();
  }

  function announce() {
    try {
      window.dispatchEvent(new CustomEvent("pbxcalltracking:number", { detail: current() }));
    } catch (e) { /* no CustomEvent: the page gets the number from number() */ }
  }

  function begin(data) {
    var siteNumbers = data.replace || [];
    if (siteNumbers.length && siteNumbers[0]) state.siteNumber = siteNumbers[0];
    // Only a pool number is held, so only a pool session sends heartbeats and leave beacons.
    state.session = data.heartbeat_interval ? data.session_id : null;
    clearInterval(state.timer);
    state.timer = data.heartbeat_interval ? setInterval(heartbeat, data.heartbeat_interval * 1000) : null;
    show(data.number, data.display, siteNumbers);
  }

  function stop() {
    state.session = null;
    clearInterval(state.timer);
    state.timer = null;
    show(state.siteNumber, null, []);
  }

  function start() {
    var body = landing();
    var request = {
      site_key: siteKey,
      visitor_id: state.visitor,
      page_url: body.page_url,
      referrer: body.referrer,
      user_agent: navigator.userAgent
    };
    TAGS.forEach(function (tag) { if (body[tag]) request[tag] = body[tag]; });
    analyticsIds(request);
    return post("session", request).then(function (response) {
      if (response.status !== 200 || !response.data.number) return null;
      return response.data;
    });
  }

  function heartbeat() {
    if (!state.session || state.restarting || document.visibilityState !== "visible") return;
    var session = state.session;
    post("heartbeat", { site_key: siteKey, visitor_id: state.visitor, session_id: session })
      .then(function (response) {
        // The number went to another visitor after a long absence, so the page must stop
        // showing it. A new session brings a number of this visitor's own.
        if (response.status === 409 && state.session === session) restart();
      })
      .catch(function () { /* pbx-bridge unreachable: keep the current number */ });
  }

  function restart() {
    state.restarting = true;
    start().then(function (data) {
      state.restarting = false;
      if (data) begin(data);
      else stop();
      announce();
    }).catch(function () {
      state.restarting = false;
      stop();
      announce();
    });
  }

  function leave() {
    if (!state.session || !navigator.sendBeacon) return;
    var body = JSON.stringify({ site_key: siteKey, visitor_id: state.visitor, session_id: state.session });
    try { navigator.sendBeacon(api + "leave", body); } catch (e) { /* ignored */ }
  }

  function run() {
    state.visitor = visitorId();
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") leave();
      else heartbeat();
    });
    window.addEventListener("pagehide", leave);
    start().then(function (data) {
      if (data) begin(data);
      resolveReady();
    }).catch(function () { resolveReady(); });
  }

  try {
    if (document.body) run();
    else document.addEventListener("DOMContentLoaded", run);
  } catch (e) {
    resolveReady();
  }
})();
