"""logad core: the pure library shared by offline training and the streaming detector.

Data flow: raw line -> LogRecord (parse) -> template id (templates) -> session window (sessions)
-> batch of windows (scoring) -> Score -> Alert (alerts). Nothing here imports faust or aiokafka.
"""

__version__ = "0.1.0"
