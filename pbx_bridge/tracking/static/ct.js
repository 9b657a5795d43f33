/*
 * pbx-bridge call tracking snippet. Load it asynchronously with the site key:
 *   <script async src="https://PBX-BRIDGE-HOST/ct.js" data-site-key="SITE-KEY"></script>
 * It asks pbx-bridge for the number this visitor should see and swaps the site's number in
 * text, in tel: links and in elements marked with data-ct-phone. Any failure leaves the page
 * with its original numbers. API: window.pbxCallTracking.number() returns a Promise of
 * {e164, display} or null.
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
  var state = { session: null, patterns: [], target: null, timer: null, observer: null };
  var resolveReady;
  var ready = new Promise(function (resolve) { resolveReady = resolve; });

  window.pbxCallTracking = {
    number: function () { return ready; }
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
    if (node.hasAttribute("data-ct-phone")) {
      if (node.textContent !== state.display) node.textContent = state.display;
    }
    var links = node.nodeName === "A" ? [node] : node.querySelectorAll("a[href^='tel:']");
    Array.prototype.forEach.call(links, function (link) {
      var href = link.getAttribute("href") || "";
      if (href.indexOf("tel:") !== 0) return;
      var replaced = link.hasAttribute("data-ct-phone") ? "tel:" + state.target.e164 : rewrite(href);
      if (replaced !== href) link.setAttribute("href", replaced);
    });
    var marked = node.querySelectorAll("[data-ct-phone]");
    Array.prototype.forEach.call(marked, function (element) {
      if (element.textContent !== state.display) element.textContent = state.display;
      if (element.nodeName === "A") element.setAttribute("href", "tel:" + state.target.e164);
    });
    var walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    var texts = [];
    while (walker.nextNode()) texts.push(walker.currentNode);
    texts.forEach(swapNode);
  }

  function watch() {
    if (!window.MutationObserver) return;
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

  function apply(data) {
    var replace = (data.replace || []).filter(function (parts) {
      return parts && parts.national !== data.number.national;
    });
    state.target = data.number;
    state.display = data.display;
    state.patterns = replace.map(pattern);
    swapNode(document.body);
    watch();
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
    if (!state.session || document.visibilityState !== "visible") return;
    post("heartbeat", { site_key: siteKey, visitor_id: state.visitor, session_id: state.session })
      .then(function (response) {
        // The number went to another visitor after a long absence: ask for one again.
        if (response.status === 409) start().then(function (data) {
          if (data) state.session = data.session_id;
        });
      })
      .catch(function () { /* pbx-bridge unreachable: keep the current number */ });
  }

  function leave() {
    if (!state.session || !navigator.sendBeacon) return;
    var body = JSON.stringify({ site_key: siteKey, visitor_id: state.visitor, session_id: state.session });
    try { navigator.sendBeacon(api + "leave", body); } catch (e) { /* ignored */ }
  }

  function run() {
    state.visitor = visitorId();
    start().then(function (data) {
      if (!data) { resolveReady(null); return; }
      state.session = data.session_id;
      apply(data);
      resolveReady({ e164: data.number.e164, display: data.display });
      if (data.heartbeat_interval) {
        state.timer = setInterval(heartbeat, data.heartbeat_interval * 1000);
        document.addEventListener("visibilitychange", function () {
          if (document.visibilityState === "hidden") leave();
          else heartbeat();
        });
        window.addEventListener("pagehide", leave);
      }
    }).catch(function () { resolveReady(null); });
  }

  try {
    if (document.body) run();
    else document.addEventListener("DOMContentLoaded", run);
  } catch (e) {
    resolveReady(null);
  }
})();
