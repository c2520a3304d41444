"""``REPLAY_FEED=events``: windowed views' events pushed as they become known, requests in between.

The replay calls a feed before answering requests (``ReplayConfig.feed``); this one says
:attr:`EventsFeed.per_instant`, so ``replay.run`` calls it before every request instant
rather than every hour. Each call ``(start, end]`` pushes online, at the replay's clock
``end``, every windowed view's events known in that span (``pipeline.push.push_events``,
read from the whole history's events tables, as the push feed reads its source tables):
the requests at ``end`` then see exactly the events known by then, as the offline join does
(``tests/feast_plugins/test_windowed_served.py``). The use case's hourly push sources are
pushed too, once per hour crossed (what ``--feed push`` does), so a FeatureService that
also has hourly views gets them as fresh as with that feed.

The first call for a store loads the windowed state up to its ``start`` from the events
tables (``push_writer.materialize_events``: what pushing every earlier event would leave),
so nothing known before the first request is missing, whatever the nightly flow loaded.
"""

from __future__ import annotations

import weakref
from datetime import datetime

import pandas as pd


class EventsFeed:
    """The event feed (module doc). Its state (what each store was fed) is per store."""

    __name__ = "events"
    #: ``replay.run`` calls it before every request instant.
    per_instant = True

    def __init__(self):
        self._hourly: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __call__(self, stream, use_case, store, start: datetime, end: datetime, records=None) -> dict:
        from feast_plugins.push_writer import materialize_events
        from feast_plugins.windowed_online import is_windowed
        from pipeline.push import push_events, push_window

        counts: dict = {}
        if store not in self._hourly:  # the first call: the state up to start, from the events tables
            views = [v for v in store.list_stream_feature_views() if is_windowed(v)]
            if views:
                materialize_events(stream, store, views, start, sources=stream.sources)
            self._hourly[store] = _hour(start)
        counts.update(push_events(stream, store, start, end, sources=stream.sources))
        hour, fed = _hour(end), self._hourly[store]
        if use_case.push_sources and hour > fed:
            counts.update(push_window(stream, use_case, store, fed, hour, sources=stream.sources,
                                      written_at=hour, records=records))
            self._hourly[store] = hour
        return counts


def _hour(when: datetime) -> datetime:
    return pd.Timestamp(when).floor("h").to_pydatetime()


#: The feed ``replay run --feed events`` / ``REPLAY_FEED=events`` uses.
events_feed = EventsFeed()
