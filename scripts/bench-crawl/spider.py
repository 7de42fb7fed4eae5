"""The Scrapy baseline of scripts/bench-crawl.sh: the same work as dc-host's
example crawler (plugins/crawl), in Scrapy.

From the start page it follows every link on the same origin (Scrapy's
duplicate filter visits each URL once; breadth-first, like the frontier), and for each page yields one item with
the page's path, title, number of same-site links and size, like the plugin's
row. Items go to a JSON-lines feed (the plugin's rows go to SQLite). Settings
mirror dc-host's: CONCURRENT concurrent requests (dc-host: `--threads`), no
delay, no AutoThrottle, robots.txt obeyed, depth limit 20 (the plugin's
MAX_DEPTH). When the crawl ends the spider writes Scrapy's stats as JSON to
`stats_out`.

    scrapy runspider spider.py -a start_url=http://127.0.0.1:PORT/ -a stats_out=stats.json \
        -s CONCURRENT_REQUESTS=8 -s CONCURRENT_REQUESTS_PER_DOMAIN=8 -O items.jsonl
"""

import json
from datetime import datetime, timezone

import scrapy


class BenchSpider(scrapy.Spider):
    name = "bench"
    custom_settings = {
        "ROBOTSTXT_OBEY": True,
        "DOWNLOAD_DELAY": 0,
        "AUTOTHROTTLE_ENABLED": False,
        "DEPTH_LIMIT": 20,
        # breadth-first, like dc-host's frontier (Scrapy's default is depth-first, which reaches
        # pages through long link chains first and then drops them at the depth limit)
        "DEPTH_PRIORITY": 1,
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        # the spider's output of one page (an item and a few requests) is handled by this many
        # asyncio tasks; the default, 100, creates 100 tasks per page (about 25 % slower here)
        "CONCURRENT_ITEMS": 4,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
    }

    def __init__(self, start_url, stats_out, **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [start_url]
        self.origin = start_url.split("/", 3)[:3]
        self.origin = "/".join(self.origin) + "/"
        self.stats_out = stats_out

    async def start(self):
        # through the duplicate filter like every other request (start URLs are not, by default),
        # so the links back to the home page do not fetch it again
        yield scrapy.Request(self.start_urls[0], callback=self.parse)

    def parse(self, response):
        links = []
        for href in response.css("a::attr(href)").getall():
            link = response.urljoin(href).split("#", 1)[0]
            if link.startswith(self.origin) and link not in links:
                links.append(link)
        yield {
            "path": "/" + response.url[len(self.origin):],
            "title": response.css("title::text").get(),
            "links": len(links),
            "bytes": len(response.body),
        }
        for link in links:
            yield scrapy.Request(link, callback=self.parse)

    def closed(self, reason):
        stats = dict(self.crawler.stats.get_stats())
        # the core stats set finish_time after this signal handler: take the time here
        stats.setdefault("finish_time", datetime.now(timezone.utc))
        stats["close_reason"] = reason
        with open(self.stats_out, "w") as f:
            json.dump(stats, f, default=str)
