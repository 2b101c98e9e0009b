// A workflow's graph drawn as SVG: one box per node, an arrow from each node to those that
// use it (its input's `{{ nodes.<name>.output }}` references, its `for_each`, and `after`).
// Shared by the workflow page (the blueprint) and the run page (coloured by node status).
// Built with lib/ui.js's `svg()` (never innerHTML), so names from the blueprint cannot inject markup.

import { svg } from '/ui/lib/ui.js';

const NODE_W = 180;
const NODE_H = 56;
const GAP_X = 72;
const GAP_Y = 20;
const PAD = 12;

const REFERENCE = /\{\{\s*nodes\.([A-Za-z0-9_-]+)\.output/g;

/** The node names a JSON value's templates reference. */
function references(value, into) {
  if (typeof value === 'string') {
    for (const m of value.matchAll(REFERENCE)) into.add(m[1]);
  } else if (Array.isArray(value)) {
    value.forEach((v) => references(v, into));
  } else if (value && typeof value === 'object') {
    Object.values(value).forEach((v) => references(v, into));
  }
  return into;
}

/**
 * Each node's dependencies, as the server computes them (core::workflow::Node::dependencies):
 * what its input and `for_each` reference, plus `after`. Names that are not nodes are dropped.
 */
export function dependencies(nodes) {
  const names = new Set(Object.keys(nodes));
  const deps = {};
  for (const [name, node] of Object.entries(nodes)) {
    const found = references(node.input ?? {}, new Set());
    if (node.for_each) references(node.for_each, found);
    for (const a of node.after ?? []) found.add(a);
    deps[name] = [...found].filter((d) => names.has(d) && d !== name).sort();
  }
  return deps;
}

/** Columns by longest path from a root (a node without dependencies), cycles tolerated. */
export function layers(deps) {
  const depth = {};
  const visiting = new Set();
  const walk = (name) => {
    if (depth[name] !== undefined) return depth[name];
    if (visiting.has(name)) return 0;
    visiting.add(name);
    const d = Math.max(-1, ...deps[name].map(walk)) + 1;
    visiting.delete(name);
    depth[name] = d;
    return d;
  };
  Object.keys(deps).sort().forEach(walk);
  const columns = [];
  for (const name of Object.keys(deps).sort()) {
    (columns[depth[name]] ??= []).push(name);
  }
  return columns.filter(Boolean);
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Draws the graph of `nodes` (the blueprint's, by name). Options:
 * - `status(name)`: a node's status, which colours it and is written in its box;
 * - `href(name)`: a link for a node's box (its prediction);
 * - `label`: the accessible name of the drawing;
 * - `navigate(url)`: follows a node's link without a reload (the app's router does not
 *   handle SVG links, whose `href` is not a string).
 * Returns `{ element, update(name) }`: `update` re-reads a node's status and link.
 */
export function drawGraph(nodes, { status, href, label = 'Workflow graph', navigate } = {}) {
  const deps = dependencies(nodes);
  const columns = layers(deps);
  const rows = Math.max(1, ...columns.map((c) => c.length));
  const width = PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * GAP_X;
  const height = PAD * 2 + rows * NODE_H + (rows - 1) * GAP_Y;
  const place = {};
  columns.forEach((names, col) => {
    // Centre each column vertically so that joins sit between what they join.
    const offset = ((rows - names.length) * (NODE_H + GAP_Y)) / 2;
    names.forEach((name, row) => {
      place[name] = {
        x: PAD + col * (NODE_W + GAP_X),
        y: PAD + offset + row * (NODE_H + GAP_Y),
      };
    });
  });

  const markerId = `arrow-${Math.random().toString(36).slice(2, 9)}`;
  const root = svg('svg', {
    class: 'wf-graph',
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    // A group, not an image: its node boxes are links, which an image may not contain.
    role: 'group',
    'aria-label': label,
  });
  root.append(
    svg('title', {}, label),
    svg(
      'defs',
      {},
      svg(
        'marker',
        {
          id: markerId,
          viewBox: '0 0 10 10',
          refX: 9,
          refY: 5,
          markerWidth: 7,
          markerHeight: 7,
          orient: 'auto-start-reverse',
        },
        svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'wf-arrow' }),
      ),
    ),
  );

  const edges = svg('g', { class: 'wf-edges' });
  for (const [name, from] of Object.entries(deps)) {
    for (const dep of from) {
      const a = place[dep];
      const b = place[name];
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      const bend = Math.max(24, (x2 - x1) / 2);
      edges.append(
        svg('path', {
          class: 'wf-edge',
          d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
          'marker-end': `url(#${markerId})`,
          'data-from': dep,
          'data-to': name,
        }),
      );
    }
  }
  root.append(edges);

  const boxes = {};
  const layer = svg('g', { class: 'wf-nodes' });
  for (const name of Object.keys(place).sort()) {
    const { x, y } = place[name];
    const node = nodes[name];
    const statusText = svg('text', { x: x + 12, y: y + 46, class: 'wf-node-status' });
    const group = svg(
      'g',
      { class: 'wf-node', 'data-node': name },
      svg('rect', { x, y, width: NODE_W, height: NODE_H, rx: 8, ry: 8 }),
      svg('text', { x: x + 12, y: y + 20, class: 'wf-node-name' }, clip(name, 22)),
      svg('text', { x: x + 12, y: y + 34, class: 'wf-node-model' },
        clip(`${node.model ?? ''}${node.for_each ? ' · for each' : ''}`, 28)),
      statusText,
      svg('title', {}, `${name}: ${node.model ?? ''}`),
    );
    const link = svg('a', { class: 'wf-node-link' }, group);
    link.addEventListener('click', (event) => {
      const url = link.getAttribute('href');
      if (!url || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      // Handled here, before the router's document listener sees an SVG link it cannot read.
      event.preventDefault();
      if (navigate) navigate(url);
      else location.assign(url);
    });
    layer.append(link);
    boxes[name] = { link, group, statusText };
  }
  root.append(layer);

  const update = (name) => {
    const box = boxes[name];
    if (!box) return;
    const s = status ? status(name) : null;
    box.group.setAttribute('class', `wf-node${s ? ` wf-status-${s}` : ''}`);
    if (s) box.group.setAttribute('data-status', s);
    box.statusText.textContent = s ?? '';
    const url = href ? href(name) : null;
    // The link's name is its visible text (node, model, status), as screen readers read it.
    if (url) box.link.setAttribute('href', url);
    else box.link.removeAttribute('href');
  };
  Object.keys(boxes).forEach(update);

  const element = document.createElement('div');
  element.className = 'wf-graph-scroll';
  element.append(root);
  return { element, update, svg: root };
}
