// The models page (`/models`): every model this server runs, with its description and price,
// each linking to its run form. A server runs a handful of models and `GET /v1/models` answers
// them on one page, so the filter box narrows the loaded list in place.

import { api } from '/ui/lib/api.js';
import { h, ensureCss, errorBox, emptyState } from '/ui/lib/ui.js';

/** A model's price in words, or null when it is free. */
export function priceText(price) {
  if (!price) return null;
  if (price.per_prediction !== undefined) {
    return `${plural(price.per_prediction, 'credit')} a prediction`;
  }
  if (price.per_second !== undefined) {
    return `${plural(price.per_second, 'credit')} a second of run time (at most ${plural(
      price.max_seconds,
      'second',
    )})`;
  }
  return null;
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function modelCard(m) {
  const name = `${m.owner}/${m.name}`;
  const price = priceText(m.price);
  return h(
    'li',
    { class: 'card model-card' },
    h('h2', { class: 'model-card-name' }, h('a', { href: `/models/${m.owner}/${m.name}` }, name)),
    h('p', { class: 'model-card-description' }, m.description || 'No description.'),
    h(
      'p',
      { class: 'model-card-meta muted' },
      price ? `Costs ${price}` : 'Free to run',
      m.latest_version?.id ? ` · version ${m.latest_version.id.slice(0, 12)}` : '',
    ),
  );
}

export async function render(main, _params, ctx) {
  ensureCss('models');
  ctx.setTitle('Run a model');
  const controller = new AbortController();
  main.replaceChildren(
    h('h1', {}, 'Run a model'),
    h('p', { class: 'loading', role: 'status' }, 'Loading models…'),
  );
  let page;
  try {
    page = await api('/v1/models', { signal: controller.signal });
  } catch (err) {
    // Another page may have been drawn meanwhile: leave it alone.
    if (controller.signal.aborted || !ctx.current) return undefined;
    main.replaceChildren(h('h1', {}, 'Run a model'), errorBox(err));
    return undefined;
  }
  if (!ctx.current) return undefined;
  const models = page.results ?? [];
  const list = h('ul', { class: 'model-grid', 'aria-label': 'Models' });
  const count = h('p', { class: 'muted', role: 'status', 'aria-live': 'polite' });
  const filter = h('input', {
    id: 'model-filter',
    name: 'filter',
    type: 'search',
    placeholder: 'e.g. image',
    autocomplete: 'off',
  });
  const show = () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = models.filter((m) => {
      const hay = `${m.owner}/${m.name} ${m.description ?? ''}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    });
    list.replaceChildren(...shown.map(modelCard));
    count.textContent =
      shown.length === models.length
        ? `${plural(models.length, 'model')}`
        : `${shown.length} of ${plural(models.length, 'model')} match`;
  };
  filter.addEventListener('input', show);
  if (models.length === 0) {
    main.replaceChildren(
      h('h1', {}, 'Run a model'),
      emptyState('This server runs no models yet. The operator adds them under [[models]] in the configuration.'),
    );
    return undefined;
  }
  show();
  main.replaceChildren(
    h('h1', {}, 'Run a model'),
    h(
      'div',
      { class: 'model-filter' },
      h('label', { for: 'model-filter' }, 'Filter models'),
      filter,
    ),
    count,
    list,
  );
  return () => controller.abort();
}
